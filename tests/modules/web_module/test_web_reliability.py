"""WebModule and the service's reliability keys, against real HTTP servers on 127.0.0.1:
rate-limit reset headers, ``incremental`` conditional requests (one lane and several) and
``max_file_bytes``. (``rate_limit`` pacing: test_web_concurrency.py.)"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from common.interfaces.base_module import (
    FetchedFile,
    FetchFailed,
    JobContext,
    Unchanged,
)
from common.retry import RetryPolicy
from modules.web_module.exceptions import WebTransientError
from modules.web_module.pages import page_name, record_name
from tests.modules.web_module.test_web_module import (
    FOLLOW,
    Page,
    Site,
    crawl,
    html,
    make_ctx,
)


class ConditionalSite(Site):
    """A Site answering ``304`` (with the page's ETag) to a conditional GET whose
    If-None-Match or If-Modified-Since matches the page it would serve."""

    def __init__(self, routes: dict[str, Any] | None = None) -> None:
        super().__init__(routes)
        self.answers: list[tuple[str, int]] = []
        """(path, status) of every answer, in order."""

    def _enter(self, path: str, headers: dict[str, str]) -> Page:
        page = super()._enter(path, headers)
        etag, modified = page.headers.get("ETag"), page.headers.get("Last-Modified")
        matches = (etag is not None and headers.get("If-None-Match") == etag) or (
            etag is None and modified is not None and headers.get("If-Modified-Since") == modified)
        if page.status == 200 and matches:
            page = Page(b"", 304, {"ETag": etag} if etag else {})
        with self._lock:
            self.answers.append((path, page.status))
        return page

    def conditional(self) -> list[tuple[str, str]]:
        """(path, the conditional header sent) of each conditional request, in order."""
        with self._lock:
            return [(p, k) for p, h in zip(self.requests, self.headers)
                    for k in ("If-None-Match", "If-Modified-Since") if k in h]


@pytest.fixture()
def site() -> Iterator[Site]:
    with Site() as s:
        yield s


@pytest.fixture()
def csite() -> Iterator[ConditionalSite]:
    with ConditionalSite() as s:
        yield s


def with_ctx(ctx: JobContext | None = None, **changes: Any) -> JobContext:
    return dataclasses.replace(ctx or make_ctx(), **changes)


def landed(files: list[Any]) -> dict[str, Mapping[str, str]]:
    """What the last manifest would hold: identities of fetched files by source URI."""
    return {f.source_uri: f.identity for f in files if isinstance(f, FetchedFile)}


# --------------------------------------------------------------------------- wait hints


@pytest.mark.parametrize(("status", "headers", "expected"), [
    (429, {"RateLimit-Reset": "7"}, 7.0),
    (503, {"X-RateLimit-Reset": "9"}, 9.0),
    (503, {"Retry-After": "2", "X-RateLimit-Reset": "9"}, 2.0),
    (500, {"X-RateLimit-Reset": "9"}, None),
])
def test_retry_wait_comes_from_the_answer(site: Site, tmp_path: Path, status: int, headers: dict[str, str],
                                          expected: float | None) -> None:
    site.routes["/limited.html"] = Page("slow down", status, {"Content-Type": "text/plain", **headers})
    with pytest.raises(WebTransientError) as info:
        crawl(tmp_path, [site.url + "/limited.html"], ctx=make_ctx(attempts=1))
    assert (info.value.fields["status"], info.value.fields["retry_after"]) == (status, expected)
    if expected is not None:
        assert RetryPolicy(max_backoff_s=5).delay(1, info.value) == min(expected, 5)


# --------------------------------------------------------------------------- incremental


@pytest.mark.parametrize("transfers", [1, 4])
def test_unchanged_leaves_answer_304_and_are_yielded_as_unchanged(csite: ConditionalSite, tmp_path: Path,
                                                                 transfers: int) -> None:
    u = csite.url
    csite.routes.update({
        "/index.html": Page(html("Index", links=("/a.html", "/b.html", "/c.html")), headers={
            "Content-Type": "text/html", "ETag": '"index-1"'}),
        "/a.html": Page(html("A"), headers={"Content-Type": "text/html", "ETag": '"a-1"'}),
        "/b.html": Page(html("B"), headers={"Content-Type": "text/html",
                                            "Last-Modified": "Thu, 01 Jan 2026 12:00:00 GMT"}),
        "/c.html": Page(html("C"), headers={"Content-Type": "text/html", "ETag": '"c-1"'}),
    })
    first = crawl(tmp_path / "1", [u + "/index.html"], ctx=make_ctx(transfers=transfers),
                  follow={**FOLLOW, "max_depth": 1}, obey_robots=False)
    assert csite.conditional() == [] and len(first) == 4
    assert landed(first)[u + "/b.html"] == {"last_modified": "Thu, 01 Jan 2026 12:00:00 GMT"}
    assert landed(first)[u + "/a.html"] == {"etag": '"a-1"'}

    csite.routes["/c.html"] = Page(html("C, edited"), headers={"Content-Type": "text/html", "ETag": '"c-2"'})
    csite.requests.clear()
    csite.headers.clear()
    second = crawl(tmp_path / "2", [u + "/index.html"],
                   ctx=with_ctx(make_ctx(transfers=transfers), previous=landed(first)),
                   follow={**FOLLOW, "max_depth": 1}, obey_robots=False)
    # the index's links are followed: it is downloaded in full; the leaves are asked conditionally
    assert sorted(csite.conditional()) == [("/a.html", "If-None-Match"), ("/b.html", "If-Modified-Since"),
                                           ("/c.html", "If-None-Match")]
    by_uri = {f.source_uri: f for f in second}
    assert isinstance(by_uri[u + "/index.html"], FetchedFile)
    a, b, c = (by_uri[u + p] for p in ("/a.html", "/b.html", "/c.html"))
    assert isinstance(a, Unchanged) and a.name == page_name(u + "/a.html") and a.identity == {"etag": '"a-1"'}
    assert isinstance(b, Unchanged) and b.identity == {"last_modified": "Thu, 01 Jan 2026 12:00:00 GMT"}
    assert isinstance(c, FetchedFile) and c.identity == {"etag": '"c-2"'}
    assert sorted((tmp_path / "2").rglob("*.html")) == sorted(
        [by_uri[u + "/index.html"].path, c.path]), "nothing written for a 304"


def test_without_follow_every_page_is_conditional_and_extract_records_follow(csite: ConditionalSite,
                                                                             tmp_path: Path) -> None:
    u = csite.url
    csite.routes["/a.html"] = Page(html("A"), headers={"Content-Type": "text/html", "ETag": '"a-1"'})
    keys: dict[str, Any] = {"extract": {"title": "h1"}, "obey_robots": False}
    first = crawl(tmp_path / "1", [u + "/a.html"], **keys)
    assert [type(f) for f in first] == [FetchedFile, FetchedFile]
    second = crawl(tmp_path / "2", [u + "/a.html"], ctx=with_ctx(previous=landed(first)), **keys)
    assert [(type(f), f.source_uri) for f in second] == [(Unchanged, u + "/a.html"),
                                                         (Unchanged, u + "/a.html#extract")]
    assert second[1].name == record_name(page_name(u + "/a.html"))
    # the record did not land last time (e.g. rejected): the page is fetched to write it again
    only_page = {u + "/a.html": {"etag": '"a-1"'}}
    third = crawl(tmp_path / "3", [u + "/a.html"], ctx=with_ctx(previous=only_page), **keys)
    assert [type(f) for f in third] == [FetchedFile, FetchedFile]
    assert len(csite.conditional()) == 1


def test_nothing_conditional_without_a_recorded_version(csite: ConditionalSite, tmp_path: Path) -> None:
    csite.routes["/a.html"] = Page(html("A"), headers={"Content-Type": "text/html", "ETag": '"a-1"'})
    url = csite.url + "/a.html"
    files = crawl(tmp_path, [url], ctx=with_ctx(previous={url: {"size": "12"}}), obey_robots=False)
    assert [type(f) for f in files] == [FetchedFile] and csite.conditional() == []


# --------------------------------------------------------------------------- max_file_bytes


def test_max_file_bytes_rejects_a_page_and_the_crawl_goes_on(site: Site, tmp_path: Path) -> None:
    big = html("Big", "x" * 5000)
    site.routes.update({
        "/index.html": Page(html("Index", links=("/declared.html", "/streamed.html", "/small.html"))),
        "/declared.html": Page(big),
        "/streamed.html": Page(big, declare_length=False),
        "/small.html": Page(html("Small")),
    })
    ctx = with_ctx(max_file_bytes=2000)
    files = crawl(tmp_path, [site.url + "/index.html"], ctx=ctx, follow=FOLLOW, obey_robots=False)
    by_uri = {f.source_uri: f for f in files}
    for path in ("/declared.html", "/streamed.html"):
        refused = by_uri[site.url + path]
        assert isinstance(refused, FetchFailed) and refused.status == "rejected"
        assert "max_file_bytes (2000)" in refused.error
    assert isinstance(by_uri[site.url + "/small.html"], FetchedFile)
    assert sorted(tmp_path.rglob("*.html")) == sorted(
        [by_uri[site.url + "/index.html"].path, by_uri[site.url + "/small.html"].path])


def test_the_smaller_limit_applies(site: Site, tmp_path: Path) -> None:
    site.routes["/big.html"] = Page(html("Big", "x" * 5000))
    url = site.url + "/big.html"
    # max_page_bytes is the smaller: skipped (logged), as without max_file_bytes
    assert crawl(tmp_path, [url], ctx=with_ctx(max_file_bytes=4000), max_page_bytes=3000, obey_robots=False) == []
    # max_file_bytes is the smaller: rejected (in the manifest)
    [refused] = crawl(tmp_path, [url], ctx=with_ctx(max_file_bytes=3000), max_page_bytes=4000, obey_robots=False)
    assert isinstance(refused, FetchFailed) and refused.status == "rejected"
