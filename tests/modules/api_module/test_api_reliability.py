"""ApiModule and the service's reliability keys, against real JSON APIs on 127.0.0.1:
``rate_limit`` pacing (token requests included), rate-limit reset headers, ``incremental``
conditional requests and ``max_file_bytes``."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from common.host_limiter import HostLimiters
from common.interfaces.base_module import (
    FetchedFile,
    FetchFailed,
    JobContext,
    Unchanged,
)
from common.retry import RetryPolicy
from common.run_resources import RunResources
from modules.api_module.exceptions import (
    ApiRateLimitedError,
    ApiTransientError,
    error_for_status,
)
from modules.api_module.pagination import page_name
from tests.modules.api_module.test_api_module import (
    TokenEndpoint,
    by_name,
    fetch_all,
    link_pages,
    make_ctx,
    make_module,
)
from tests.modules.pacing import assert_spaced
from tests.servers.api_server import ApiReply, ApiRequest, ApiServer, json_reply


@pytest.fixture()
def api() -> Iterator[ApiServer]:
    with ApiServer() as server:
        yield server


def with_ctx(ctx: JobContext | None = None, **changes: Any) -> JobContext:
    return dataclasses.replace(ctx or make_ctx(), **changes)


class Versioned:
    """A route serving a JSON document with an ETag (and Last-Modified), answering 304 to
    a matching If-None-Match, or If-Modified-Since when the route has no ETag."""

    def __init__(self, document: Any, etag: str | None = '"v1"',
                 modified: str | None = "Thu, 01 Jan 2026 12:00:00 GMT") -> None:
        self.document, self.etag, self.modified = document, etag, modified
        self.statuses: list[int] = []
        """Status of every reply, in order."""

    def __call__(self, req: ApiRequest) -> ApiReply:
        headers = {k: v for k, v in (("ETag", self.etag), ("Last-Modified", self.modified)) if v}
        if (self.etag is not None and req.headers.get("if-none-match") == self.etag) or (
                self.etag is None and self.modified is not None
                and req.headers.get("if-modified-since") == self.modified):
            reply = ApiReply(304, b"", headers)
        else:
            reply = json_reply(self.document, headers=headers)
        self.statuses.append(reply.status)
        return reply


def landed(items: list[Any]) -> dict[str, Mapping[str, str]]:
    """What the last manifest would hold: identities of fetched files by source URI."""
    return {f.source_uri: f.identity for f in items if isinstance(f, FetchedFile)}


def conditional(api: ApiServer) -> list[str]:
    return [r.target for r in api.requests if "if-none-match" in r.headers or "if-modified-since" in r.headers]


# --------------------------------------------------------------------------- rate_limit


def test_rate_limit_paces_pages_and_token_requests_across_jobs(api: ApiServer, tmp_path: Path) -> None:
    tokens = TokenEndpoint(api)
    api.route("/data", tokens.guard)
    limiters, resources = HostLimiters(), RunResources()  # the run's: shared by its jobs
    auth = tokens.oauth(api, "paced-client")
    results: list[list[Any]] = []
    jobs = [threading.Thread(target=lambda i=i: results.append(fetch_all(make_module(
        api, make_ctx(transfers=4, requests_per_s=20, limiters=limiters, resources=resources),
        endpoints=[f"/data?e={k}" for k in range(5)], auth=auth), tmp_path / str(i)))) for i in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
    assert [len(r) for r in results] == [5, 5] and all(isinstance(f, FetchedFile) for r in results for f in r)
    assert len(api.requests_to("/token")) == 1 and len(api.requests) == 11, "one token for the run"
    assert_spaced([r.at for r in api.requests], 1 / 20)


# --------------------------------------------------------------------------- wait hints


@pytest.mark.parametrize(("status", "headers", "cls", "expected"), [
    (429, {"RateLimit-Reset": "12"}, ApiRateLimitedError, 12.0),
    (429, {"Retry-After": "2", "RateLimit-Reset": "12"}, ApiRateLimitedError, 2.0),
    (503, {"X-RateLimit-Reset": "4"}, ApiTransientError, 4.0),
    (503, {"Retry-After": "3"}, ApiTransientError, 3.0),
    (500, {"X-RateLimit-Reset": "4"}, ApiTransientError, None),
    (502, {}, ApiTransientError, None),
])
def test_the_error_carries_the_wait_the_reply_asks_for(status: int, headers: dict[str, str], cls: type,
                                                       expected: float | None) -> None:
    error = error_for_status(status, "http://h/x", b"busy", headers)
    assert type(error) is cls and error.retry_after == expected  # type: ignore[attr-defined]


def test_a_503_waits_until_the_rate_limit_resets(api: ApiServer, tmp_path: Path) -> None:
    api.route("/busy", lambda req: json_reply({}, 503, {"X-RateLimit-Reset": "1"}) if req.count == 1
              else json_reply([1]))
    ctx = with_ctx(retry=RetryPolicy(attempts=2, backoff_s=0.01, max_backoff_s=5))
    [page] = fetch_all(make_module(api, ctx, endpoints=["/busy"]), tmp_path)
    assert isinstance(page, FetchedFile)
    first, second = api.requests
    assert second.at - first.at >= 0.95, "the retry waited what X-RateLimit-Reset asked, not the 0.01 s backoff"


# --------------------------------------------------------------------------- incremental


def test_an_unpaginated_endpoint_is_asked_conditionally_and_304_is_unchanged(api: ApiServer, tmp_path: Path) -> None:
    api.route("/a", Versioned({"a": 1}))
    api.route("/b", Versioned({"b": 1}, etag=None))
    api.route("/c", Versioned({"c": 1}, etag='"c1"'))
    endpoints = ["/a", "/b", "/c"]
    first = fetch_all(make_module(api, endpoints=endpoints), tmp_path / "1")
    assert conditional(api) == [] and len(landed(first)) == 3
    assert landed(first)[f"{api.url}/a"] == {"etag": '"v1"', "last_modified": "Thu, 01 Jan 2026 12:00:00 GMT"}

    api.route("/c", Versioned({"c": 2}, etag='"c2"'))
    second = by_name(fetch_all(make_module(api, with_ctx(previous=landed(first)), endpoints=endpoints), tmp_path / "2"))
    assert sorted(conditional(api)) == ["/a", "/b", "/c"]
    a, b, c = (second[page_name(e, 1)] for e in endpoints)
    assert isinstance(a, Unchanged) and a.source_uri == f"{api.url}/a" and a.identity["etag"] == '"v1"'
    assert isinstance(b, Unchanged) and b.identity == {"last_modified": "Thu, 01 Jan 2026 12:00:00 GMT"}
    assert isinstance(c, FetchedFile) and c.identity["etag"] == '"c2"' and c.path.read_bytes() == b'{"c": 2}'
    assert sorted(p.name for p in (tmp_path / "2").iterdir()) == [c.path.name], "nothing written for a 304"
    a_request = [r for r in api.requests if r.target == "/a"][-1]
    assert a_request.headers["if-none-match"] == '"v1"'
    assert a_request.headers["if-modified-since"] == "Thu, 01 Jan 2026 12:00:00 GMT"


def test_paginated_endpoints_are_never_asked_conditionally(api: ApiServer, tmp_path: Path) -> None:
    api.route("/pages", link_pages(3))
    previous = {f"{api.url}/pages": {"etag": '"v1"'}, f"{api.url}/pages?page=2": {"etag": '"v1"'}}
    got = fetch_all(make_module(api, with_ctx(previous=previous), endpoints=["/pages"],
                                paginate={"type": "link_header"}), tmp_path)
    assert [type(f) for f in got] == [FetchedFile] * 3 and conditional(api) == []


# --------------------------------------------------------------------------- max_file_bytes


def test_a_page_over_max_file_bytes_is_rejected_and_ends_its_endpoint(api: ApiServer, tmp_path: Path) -> None:
    api.route("/big", lambda req: json_reply(["y" * 5000]))
    api.route("/small", lambda req: json_reply([1]))

    def pages(req: ApiRequest) -> ApiReply:  # page 2 is too large; page 3 is never asked for
        n = int(req.query.get("page", "1"))
        body = ["z" * 5000] if n == 2 else [n]
        return json_reply(body, headers={"Link": f'</paged?page={n + 1}>; rel="next"'} if n < 3 else {})
    api.route("/paged", pages)

    got = by_name(fetch_all(make_module(api, with_ctx(max_file_bytes=1000), endpoints=["/big", "/small", "/paged"],
                                        paginate={"type": "link_header"}), tmp_path))
    big = got[page_name("/big", 1)]
    assert isinstance(big, FetchFailed) and big.status == "rejected" and "max_file_bytes (1000)" in big.error
    assert isinstance(got[page_name("/small", 1)], FetchedFile)
    assert isinstance(got[page_name("/paged", 1)], FetchedFile)
    cut = got[page_name("/paged", 2)]
    assert isinstance(cut, FetchFailed) and cut.status == "rejected" and page_name("/paged", 3) not in got
    assert [r.target for r in api.requests_to("/paged")] == ["/paged", "/paged?page=2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        got[page_name(e, 1)].path.name for e in ("/small", "/paged"))


def test_the_smaller_limit_applies(api: ApiServer, tmp_path: Path) -> None:
    api.route("/big", lambda req: json_reply(["y" * 5000]))
    api.route("/small", lambda req: json_reply([1]))

    def big(ctx: JobContext, **source: Any) -> FetchFailed:
        got = by_name(fetch_all(make_module(api, ctx, endpoints=["/big", "/small"], **source), tmp_path))
        page = got[page_name("/big", 1)]
        assert isinstance(page, FetchFailed)
        return page

    # max_response_bytes is the smaller: the endpoint fails, as without max_file_bytes
    failed = big(with_ctx(max_file_bytes=4000), max_response_bytes=3000)
    assert failed.status == "failed" and "max_response_bytes" in failed.error
    # max_file_bytes is the smaller: the page is rejected
    assert big(with_ctx(max_file_bytes=3000), max_response_bytes=4000).status == "rejected"
