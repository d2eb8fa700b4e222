"""WebModule against real HTTP servers on 127.0.0.1 (http.server in threads): what is fetched,
what is never requested, names, limits and errors, one lane at a time (``transfers: 1``, the
order is then exact); concurrency, politeness and stop: test_web_concurrency.py."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pickle
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self

import pytest
import structlog

from common.config_model import ValidateConfig
from common.exceptions import ConfigError, is_transient
from common.host_limiter import HostLimiters, JobHosts
from common.interfaces.base_module import (
    FetchedFile,
    FetchFailed,
    JobContext,
    Unchanged,
)
from common.job_config import resolve_source
from common.retry import RetryPolicy
from common.secret import Secret
from common.validators import ValidatorSet
from modules.web_module.exceptions import (
    WebHttpError,
    WebSourceError,
    WebTransientError,
)
from modules.web_module.main import WebModule
from modules.web_module.pages import HostMatcher, normalize_url, page_name

HTML = "text/html; charset=utf-8"


# --------------------------------------------------------------------------- a real site


@dataclass
class Page:
    """One answer of the test site."""

    body: bytes | str = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": HTML})
    declare_length: bool = True
    """False: no Content-Length, the body ends when the connection closes."""
    delay_s: float = 0.0
    """Seconds the server takes before answering (on top of the site's ``delay_s``)."""


Route = Page | Callable[[int], Page]
"""A page, or a function of how many times the path was asked (from 1) giving one."""


class Site:
    """A ThreadingHTTPServer on 127.0.0.1, a random port; serves ``routes`` (path with query,
    else path alone) and 404 otherwise; records every request, its headers and arrival time, and
    the most requests it was serving at once (``peak``).

    ``gather``: requests of pages other than /index.html and /robots.txt are held until that many requests were in flight
    at once (or 10 s passed), so a client able to send that many at once is seen doing so
    whatever the scheduling; after that nothing is held."""

    def __init__(self, routes: dict[str, Route] | None = None, delay_s: float = 0.0, gather: int = 0) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.delay_s = delay_s
        self.gather = gather
        self.requests: list[str] = []
        self.times: list[float] = []
        self.headers: list[dict[str, str]] = []
        self.active = self.peak = 0
        self._lock = threading.Lock()
        self._peaked = threading.Condition(self._lock)
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body in two writes: no 40 ms delayed-ACK stall

            def do_GET(self) -> None:
                page = site._enter(self.path, dict(self.headers))
                self.send_response(page.status)
                for name, value in page.headers.items():
                    self.send_header(name, value)
                body = page.body.encode() if isinstance(page.body, str) else page.body
                if page.declare_length:
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def _enter(self, path: str, headers: dict[str, str]) -> Page:
        with self._lock:
            self.requests.append(path)
            self.times.append(time.monotonic())
            self.headers.append(headers)
            count = self.requests.count(path)
            self.active += 1
            self.peak = max(self.peak, self.active)
            self._peaked.notify_all()
            if self.gather and path not in ("/robots.txt", "/index.html"):
                self._peaked.wait_for(lambda: self.peak >= self.gather, timeout=10)
        try:
            if self.delay_s:
                time.sleep(self.delay_s)  # keeps requests overlapping, to measure concurrency
            route = self.routes.get(path, self.routes.get(path.split("?")[0], Page("not found", 404)))
            page = route(count) if callable(route) else route
            if page.delay_s:
                time.sleep(page.delay_s)
            return page
        finally:
            # Counted out before the answer is written: the client cannot have the answer
            # (and start its next request) while this one still counts as in flight.
            with self._lock:
                self.active -= 1

    def paths(self) -> list[str]:
        with self._lock:
            return list(self.requests)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def html(title: str = "A page", body: str = "", links: tuple[str, ...] = ()) -> str:
    anchors = "".join(f'<a class="article" href="{href}">{href}</a>' for href in links)
    return f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1>{body}</article>{anchors}</body></html>"


@pytest.fixture()
def site() -> Iterator[Site]:
    with Site() as s:
        yield s


@pytest.fixture()
def foreign() -> Iterator[Site]:
    with Site({"/": Page(html("Foreign")), "/x.html": Page(html("Foreign"))}) as s:
        yield s


def make_ctx(stop: threading.Event | None = None, attempts: int = 2, transfers: int = 1,
             max_connections: int | None = None, delay_s: float = 0.0, requests_per_s: float | None = None,
             limiters: HostLimiters | None = None) -> JobContext:
    """A job's context as the executor builds it: ``transfers`` lanes, the service's per-host rules
    (``limits.max_connections``, ``limits.delay_s``, ``rate_limit``) over ``limiters`` (the run's:
    pass one to several jobs to share it)."""
    stop = stop or threading.Event()
    return JobContext(
        run_id="run-test", job_id="job-1", service_id="web_test", module="web",
        validators=ValidatorSet(ValidateConfig(json_schema_path=None, json_schema=None, csv=None, html=None)),
        retry=RetryPolicy(attempts=attempts, backoff_s=0.01, max_backoff_s=0.05), timeout_s=5.0,
        stop=stop, transfers=transfers,
        hosts=JobHosts(limiters or HostLimiters(stop), concurrency=max_connections, requests_per_s=requests_per_s,
                       delay_s=delay_s),
    )


def module(urls: list[str], ctx: JobContext | None = None, **keys: Any) -> WebModule:
    return WebModule(resolve_source({"urls": urls, **keys}, WebModule.source_schema), ctx or make_ctx())


def crawl(workdir: Path, urls: list[str], ctx: JobContext | None = None,
          **keys: Any) -> list[FetchedFile | FetchFailed | Unchanged]:
    ctx = ctx or make_ctx()
    mod = module(urls, ctx, **keys)
    try:
        return list(mod.fetch(workdir))
    finally:
        mod.close()
        ctx.resources.close()  # the run's sessions (the executor closes them at the run's end)


def expected_name(url: str, slug: str) -> str:
    host = url.split("//")[1].split("/")[0].replace(":", "_")
    return f"{host}/{slug}-{hashlib.sha1(url.encode()).hexdigest()[:8]}.html"


def uris(files: list[FetchedFile | FetchFailed]) -> list[str]:
    return [f.source_uri for f in files]


FOLLOW = {"selector": "a.article"}


# --------------------------------------------------------------------------- crawling


def test_follows_selected_links_breadth_first_once_each(site: Site, tmp_path: Path) -> None:
    u = site.url
    site.routes.update({
        "/index.html": Page(html("Index", '<a href="/other.html">not selected</a>',
                                 links=("/a.html", "b.html#top", "mailto:x@example.com", "javascript:void(0)",
                                        "/a.html", f"{u}/a.html#again"))),
        "/a.html": Page(html("A", links=("/c.html", "/index.html")), headers={"Content-Type": HTML, "ETag": '"e-a"'}),
        "/b.html": Page(html("B")),
        "/c.html": Page(html("C")),
        "/other.html": Page(html("Other")),
    })
    files = crawl(tmp_path, [f"{u}/index.html"], follow=FOLLOW)
    assert uris(files) == [f"{u}/index.html", f"{u}/a.html", f"{u}/b.html", f"{u}/c.html"]
    assert all(isinstance(f, FetchedFile) for f in files)
    assert site.paths() == ["/robots.txt", "/index.html", "/a.html", "/b.html", "/c.html"]
    first = files[1]
    assert isinstance(first, FetchedFile)
    assert first.name == expected_name(f"{u}/a.html", "a")
    assert first.path.read_text() == html("A", links=("/c.html", "/index.html"))
    assert first.sha256 == hashlib.sha256(first.path.read_bytes()).hexdigest() and first.size == first.path.stat().st_size
    assert first.identity["etag"] == '"e-a"'
    assert site.headers[1]["User-Agent"].startswith("module_system/")


def test_without_follow_only_start_urls_are_fetched(site: Site, tmp_path: Path) -> None:
    site.routes.update({"/": Page(html("Root", links=("/a.html",))), "/a.html": Page(html("A"))})
    files = crawl(tmp_path, [site.url, site.url + "/"], obey_robots=False)
    assert uris(files) == [site.url + "/"] and site.paths() == ["/"]
    assert files[0].name == expected_name(site.url + "/", "index")


def test_page_names_are_safe_stable_and_unique() -> None:
    a = normalize_url("HTTP://Example.COM:80/News/Story.html?id=7&x=a b#frag")
    assert a == "http://example.com/News/Story.html?id=7&x=a%20b"
    assert page_name(a) == page_name(a) == f"example.com/News-Story-id-7-x-a-20b-{hashlib.sha1(a.encode()).hexdigest()[:8]}.html"
    assert page_name("http://example.com/a?p=1") != page_name("http://example.com/a?p=2")
    assert page_name("https://example.com:8443/").startswith("example.com_8443/index-")
    long = page_name("http://example.com/" + "x" * 500)
    assert len(long.split("/")[1]) <= 80 + 1 + 8 + 5
    evil = page_name("http://example.com/../../etc/passwd%00.html")
    assert ".." not in evil.split("/") and "\x00" not in evil and evil.count("/") == 1
    assert normalize_url("ftp://example.com/x") is None and normalize_url("http://:80/") is None


def test_allowed_hosts_entries() -> None:
    bare = HostMatcher(["example.com"])
    assert bare.allows("http://example.com/") and bare.allows("https://example.com/")
    assert not bare.allows("http://example.com:8080/") and not bare.allows("http://www.example.com/")
    exact = HostMatcher(["127.0.0.1:8000", "[::1]:9000"])
    assert exact.allows("http://127.0.0.1:8000/x") and not exact.allows("http://127.0.0.1:8001/x")
    assert exact.allows("http://[::1]:9000/")
    assert HostMatcher(["https://Example.com:8443/path"]).allows("https://example.com:8443/x")


def test_links_to_other_hosts_are_never_requested(site: Site, foreign: Site, tmp_path: Path) -> None:
    site.routes["/index.html"] = Page(html("Index", links=(f"{foreign.url}/x.html", "/a.html")))
    site.routes["/a.html"] = Page(html("A"))
    files = crawl(tmp_path, [site.url + "/index.html"], follow=FOLLOW)
    assert uris(files) == [site.url + "/index.html", site.url + "/a.html"]
    assert foreign.paths() == []
    # named explicitly, the other host is crawled too
    both = crawl(tmp_path / "2", [site.url + "/index.html"], follow=FOLLOW,
                 allowed_hosts=[f"127.0.0.1:{site.port}", f"127.0.0.1:{foreign.port}"])
    assert foreign.url + "/x.html" in uris(both)


def test_redirects_are_followed_by_hand_never_off_the_allowed_hosts(site: Site, foreign: Site, tmp_path: Path) -> None:
    def moved(to: str, status: int = 302) -> Page:
        return Page("", status, {"Location": to})

    site.routes.update({
        "/index.html": Page(html("Index", links=("/r1", "/away", "/loop1", "/hop0", "/ftp"))),
        "/r1": moved("/final.html", 301),
        "/final.html": Page(html("Final")),
        "/away": moved(f"{foreign.url}/x.html"),
        "/loop1": moved("/loop2", 307), "/loop2": moved("/loop1", 308),
        **{f"/hop{i}": moved(f"/hop{i + 1}") for i in range(7)},
        "/ftp": moved("ftp://127.0.0.1/x"),
    })
    files = crawl(tmp_path, [site.url + "/index.html"], follow=FOLLOW)
    fetched = [f for f in files if isinstance(f, FetchedFile)]
    assert uris(fetched) == [site.url + "/index.html", site.url + "/final.html"]
    assert fetched[1].name == expected_name(site.url + "/final.html", "final")
    failed = [f for f in files if isinstance(f, FetchFailed)]
    assert uris(failed) == [site.url + "/hop0"] and "redirects" in failed[0].error
    assert foreign.paths() == [], "a redirect to a host that is not allowed is not followed"
    assert site.paths().count("/loop1") == 1 and "/hop6" not in site.paths()


def test_non_html_answers_are_skipped(site: Site, tmp_path: Path) -> None:
    site.routes.update({
        "/index.html": Page(html("Index", links=("/data.json", "/none", "/page.xhtml", "/empty"))),
        "/data.json": Page('{"a": 1}', headers={"Content-Type": "application/json"}),
        "/none": Page("<html></html>", headers={}),
        "/page.xhtml": Page(html("X"), headers={"Content-Type": "application/xhtml+xml"}),
        "/empty": Page("", 204, headers={}),
    })
    with structlog.testing.capture_logs() as logs:
        files = crawl(tmp_path, [site.url + "/index.html"], follow=FOLLOW)
    assert uris(files) == [site.url + "/index.html", site.url + "/page.xhtml"]
    skipped = {e["url"]: e["reason"] for e in logs if e["event"] == "web_page_skipped"}
    assert "application/json" in skipped[site.url + "/data.json"] and "missing" in skipped[site.url + "/none"]
    assert site.url + "/empty" in skipped


def test_max_page_bytes_declared_or_streamed(site: Site, tmp_path: Path) -> None:
    big = "<html><title>t</title><body>" + "x" * 5000 + "</body></html>"
    site.routes.update({
        "/index.html": Page(html("Index", links=("/declared", "/streamed", "/small"))),
        "/declared": Page(big), "/streamed": Page(big, declare_length=False), "/small": Page(html("S")),
    })
    files = crawl(tmp_path, [site.url + "/index.html"], follow=FOLLOW, max_page_bytes=2000)
    assert uris(files) == [site.url + "/index.html", site.url + "/small"]
    on_disk = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert on_disk == sorted(f.path.relative_to(tmp_path).as_posix() for f in files), "no partial file is left behind"


def test_max_pages_bounds_the_requests(site: Site, tmp_path: Path) -> None:
    site.routes["/index.html"] = Page(html("Index", links=tuple(f"/p{i}.html" for i in range(10))))
    site.routes.update({f"/p{i}.html": Page(html(f"P{i}", links=("/deep.html",))) for i in range(10)})
    files = crawl(tmp_path, [site.url + "/index.html"], follow={**FOLLOW, "max_pages": 3})
    assert uris(files) == [site.url + p for p in ("/index.html", "/p0.html", "/p1.html", "/p2.html")]
    assert site.paths() == ["/robots.txt", "/index.html", "/p0.html", "/p1.html", "/p2.html"]


@pytest.mark.parametrize("max_depth", [0, 2])
def test_max_depth_bounds_link_hops(site: Site, tmp_path: Path, max_depth: int) -> None:
    site.routes.update({f"/d{i}.html": Page(html(f"D{i}", links=(f"/d{i + 1}.html",))) for i in range(5)})
    files = crawl(tmp_path, [site.url + "/d0.html"], follow={**FOLLOW, "max_depth": max_depth})
    expected = [f"/d{i}.html" for i in range(max_depth + 1)]
    assert uris(files) == [site.url + p for p in expected]
    assert site.paths() == ["/robots.txt", *expected]


def test_extract_writes_a_record_right_after_each_page(site: Site, tmp_path: Path) -> None:
    site.routes.update({
        "/a.html": Page('<html><head><title>T</title></head><body><h1> Hello\n  <b>world</b> </h1>'
                        '<p class="by">Ann</p><p class="by">Bob</p><a class="article" href="/b.html">b</a></body></html>'),
        "/b.html": Page("<html><title>B</title><body><h1>Only</h1></body></html>"),
    })
    files = crawl(tmp_path, [site.url + "/a.html"], follow=FOLLOW,
                  extract={"headline": "h1", "author": "p.by", "missing": ".nope"})
    assert [type(f) for f in files] == [FetchedFile] * 4
    page, record = files[0], files[1]
    assert isinstance(page, FetchedFile) and isinstance(record, FetchedFile)
    assert record.name == page.name[: -len(".html")] + ".json"
    assert record.source_uri == page.source_uri + "#extract"
    assert json.loads(record.path.read_text()) == {"headline": "Hello world", "author": "Ann", "missing": None}
    assert json.loads(files[3].path.read_text()) == {"headline": "Only", "author": None, "missing": None}
    assert record.sha256 == hashlib.sha256(record.path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- robots.txt


def test_robots_disallow_is_obeyed_and_can_be_turned_off(site: Site, tmp_path: Path) -> None:
    site.routes.update({
        "/robots.txt": Page("User-agent: *\nDisallow: /private/\n", headers={"Content-Type": "text/plain"}),
        "/index.html": Page(html("Index", links=("/private/secret.html", "/public.html"))),
        "/private/secret.html": Page(html("Secret")), "/public.html": Page(html("Public")),
    })
    files = crawl(tmp_path, [site.url + "/index.html"], follow=FOLLOW)
    assert uris(files) == [site.url + "/index.html", site.url + "/public.html"]
    assert "/private/secret.html" not in site.paths() and site.paths().count("/robots.txt") == 1
    files = crawl(tmp_path / "2", [site.url + "/index.html"], follow=FOLLOW, obey_robots=False)
    assert site.url + "/private/secret.html" in uris(files)


def test_robots_rules_for_our_user_agent(site: Site, tmp_path: Path) -> None:
    site.routes["/robots.txt"] = Page("User-agent: module_system\nDisallow: /\n\nUser-agent: *\nAllow: /\n",
                                      headers={"Content-Type": "text/plain"})
    site.routes["/index.html"] = Page(html("Index"))
    assert crawl(tmp_path, [site.url + "/index.html"]) == []
    assert "/index.html" not in site.paths()
    files = crawl(tmp_path, [site.url + "/index.html"], user_agent="otherbot/2.0")
    assert uris(files) == [site.url + "/index.html"] and site.headers[-1]["User-Agent"] == "otherbot/2.0"


@pytest.mark.parametrize(("status", "allowed"), [(404, True), (410, True), (403, False), (401, False)])
def test_robots_answer_status(site: Site, tmp_path: Path, status: int, allowed: bool) -> None:
    site.routes.update({"/robots.txt": Page("no", status), "/index.html": Page(html("Index"))})
    files = crawl(tmp_path, [site.url + "/index.html"])
    assert (uris(files) == [site.url + "/index.html"]) is allowed


# --------------------------------------------------------------------------- errors


def test_gone_pages_fail_alone(site: Site, tmp_path: Path) -> None:
    site.routes.update({
        "/index.html": Page(html("Index", links=("/missing.html", "/gone.html", "/forbidden.html", "/ok.html"))),
        "/gone.html": Page("gone", 410), "/forbidden.html": Page("no", 403), "/ok.html": Page(html("OK")),
    })
    files = crawl(tmp_path, [site.url + "/index.html"], follow=FOLLOW)
    failed = {f.source_uri: f for f in files if isinstance(f, FetchFailed)}
    assert set(failed) == {site.url + p for p in ("/missing.html", "/gone.html", "/forbidden.html")}
    assert "404" in failed[site.url + "/missing.html"].error
    assert failed[site.url + "/gone.html"].name == expected_name(site.url + "/gone.html", "gone")
    assert uris([f for f in files if isinstance(f, FetchedFile)]) == [site.url + "/index.html", site.url + "/ok.html"]
    assert site.paths().count("/missing.html") == 1, "a 404 is not retried"


def test_start_url_not_found_fails_the_source(site: Site, tmp_path: Path) -> None:
    with pytest.raises(WebHttpError) as info:
        crawl(tmp_path, [site.url + "/nope.html"])
    assert info.value.status == 404 and not is_transient(info.value)


def test_transient_answers_are_retried_with_retry_after(site: Site, tmp_path: Path) -> None:
    site.routes["/busy.html"] = lambda n: Page("wait", 503, {"Retry-After": "0"}) if n == 1 else Page(html("Busy"))
    site.routes["/slow.html"] = Page("slow down", 429, {"Retry-After": "7"})
    files = crawl(tmp_path, [site.url + "/busy.html"], ctx=make_ctx(attempts=3))
    assert uris(files) == [site.url + "/busy.html"] and site.paths().count("/busy.html") == 2
    with pytest.raises(WebTransientError) as info:
        crawl(tmp_path, [site.url + "/slow.html"], ctx=make_ctx(attempts=1))
    assert info.value.status == 429 and info.value.retry_after == 7.0 and is_transient(info.value)
    assert RetryPolicy(max_backoff_s=30).delay(1, info.value) == 7.0


def test_unreachable_start_url_fails_after_retries(site: Site, tmp_path: Path) -> None:
    site.routes["/down.html"] = Page("down", 500)
    with pytest.raises(WebTransientError):
        crawl(tmp_path, [site.url + "/down.html"], ctx=make_ctx(attempts=3))
    assert site.paths().count("/down.html") == 3
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(WebTransientError, match="connection failed"):
        crawl(tmp_path, [f"http://127.0.0.1:{closed_port}/"])


def test_a_failing_site_fails_the_source_after_pages_fail_in_a_row(site: Site, tmp_path: Path) -> None:
    site.routes["/index.html"] = Page(html("Index", links=tuple(f"/e{i}.html" for i in range(8))))
    site.routes.update({f"/e{i}.html": Page("boom", 500) for i in range(8)})
    seen: list[FetchedFile | FetchFailed] = []
    with pytest.raises(WebTransientError):
        seen.extend(module([site.url + "/index.html"], make_ctx(attempts=1), follow=FOLLOW).fetch(tmp_path))
    assert [type(f) for f in seen] == [FetchedFile] + [FetchFailed] * 4
    # one lane: the page after the fifth failure may already be on its way, no further one
    assert "/e6.html" not in site.paths()


def test_errors_pickle_with_their_fields() -> None:
    err = WebTransientError("http://h/x: HTTP 503", url="http://h/x", status=503, retry_after=2.0)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is WebTransientError and back.retry_after == 2.0 and str(back) == str(err)


# --------------------------------------------------------------------------- config


def test_schema_defaults_and_secret_headers(site: Site, tmp_path: Path) -> None:
    source = resolve_source({"urls": ["http://example.com/"], "headers": {"X-Token": "tok-123"}},
                            WebModule.source_schema)
    assert source["follow"] is None and source["allowed_hosts"] is None and source["obey_robots"] is True
    assert source["max_page_bytes"] == 10 * 1024 * 1024
    assert source["verify_tls"] is True and source["extract"] == {}
    assert isinstance(source["headers"]["X-Token"], Secret)
    follow = resolve_source({"urls": ["http://e.com/"], "follow": {"selector": "a"}}, WebModule.source_schema)["follow"]
    assert follow == {"selector": "a", "max_pages": 50, "max_depth": 3}
    site.routes["/index.html"] = Page(html("Index"))
    crawl(tmp_path, [site.url + "/index.html"], headers={"X-Token": "tok-123"}, obey_robots=False)
    assert site.headers[0]["X-Token"] == "tok-123"


@pytest.mark.parametrize("raw", [
    {"urls": ["ftp://example.com/"]},
    {"urls": []},
    {"urls": ["http://example.com/"], "depth": 3},
    {"urls": ["http://example.com/"], "follow": {"max_pages": 3}},
    {"urls": ["http://example.com/"], "max_connections_per_host": 2},  # now the service's limits.max_connections
    {"urls": ["http://example.com/"], "delay_s": 0.5},  # now the service's limits.delay_s
    {"urls": ["http://example.com/"], "extract": {"title": 3}},
])
def test_schema_rejects_bad_sources(raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        resolve_source(raw, WebModule.source_schema)


def test_invalid_selector_fails_the_source() -> None:
    with pytest.raises(WebSourceError, match="invalid CSS selector"):
        module(["http://example.com/"], follow={"selector": "a["})


def test_verify_tls_false_is_logged(site: Site, tmp_path: Path) -> None:
    site.routes["/index.html"] = Page(html("Index"))
    with structlog.testing.capture_logs() as logs:
        crawl(tmp_path, [site.url + "/index.html"], verify_tls=False, obey_robots=False)
    assert any(e["event"] == "web_tls_verification_disabled" and e["log_level"] == "warning" for e in logs)


def test_validate_html_runs_on_the_crawls_tree_with_the_checkers_answer(tmp_path: Path) -> None:
    """A page the crawl parses for its links is checked by validate.html on that same tree: the
    answer is the one the checker gives reading the file itself."""
    from common.config_model import HtmlRules
    from common.validators.html_checker import HtmlChecker

    rules = HtmlRules(required=("article h1",), min_text_chars=20, require_title=True)
    routes: dict[str, Route] = {
        "/index.html": Page(html("Index", "<article><h1>Home</h1>" + "text " * 10 + "</article>",
                                 links=("/thin.html", "/untitled.html"))),
        "/thin.html": Page(html("Thin", "<p>x</p>")),
        "/untitled.html": Page("<html><body><article><h1>No title</h1>" + "words " * 10 + "</article></body></html>"),
    }
    ctx = dataclasses.replace(make_ctx(), validators=ValidatorSet(
        ValidateConfig(json_schema_path=None, json_schema=None, csv=None, html=rules)))
    checker = HtmlChecker(rules)
    with Site(routes) as site:
        mod = module([site.url + "/index.html"], ctx, follow=FOLLOW)
        try:
            answers = {f.source_uri.rsplit("/", 1)[1]: (mod.validate(f), checker.check(f.path))
                       for f in mod.fetch(tmp_path) if isinstance(f, FetchedFile)}
        finally:
            mod.close()
    assert set(answers) == {"index.html", "thin.html", "untitled.html"}
    for name, (crawled, direct) in answers.items():
        assert crawled == direct, name
    assert answers["index.html"][0] == []
    assert any("visible text" in p.message for p in answers["thin.html"][0])
    assert any("<title>" in p.message for p in answers["untitled.html"][0])
