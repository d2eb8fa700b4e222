"""WebModule with several requests in flight in one job (``transfers`` lanes), against real HTTP
servers on 127.0.0.1: concurrency up to the per-host cap and never past it (counted by the
server), ``limits.delay_s`` and ``rate_limit`` spacing (the server's arrival times), the
crawl's scope whatever order answers come in, stop at a page boundary, bounded read-ahead,
cookies per job, and what the executor reads of the class (hosts, supports)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest

from common.host_limiter import HostLimiters, JobHosts, host_of
from common.interfaces.base_module import FetchedFile
from common.job_config import resolve_source
from modules.web_module.main import PAGES_PER_LANE, WebModule
from tests.modules.pacing import assert_spaced
from tests.modules.web_module.test_web_module import (
    FOLLOW,
    Page,
    Route,
    Site,
    crawl,
    html,
    make_ctx,
    module,
    uris,
)


def lane_threads() -> list[threading.Thread]:
    """Live lane threads of the test jobs (``JobContext.lanes`` names them ``<job_id>-lane``)."""
    return [t for t in threading.enumerate() if t.name.startswith("job-1-lane")]


def fan(count: int, delay_s: float = 0.0) -> dict[str, Route]:
    """An index linking ``count`` pages ``/p<i>.html``."""
    routes: dict[str, Route] = {f"/p{i}.html": Page(html(f"P{i}"), delay_s=delay_s) for i in range(count)}
    routes["/index.html"] = Page(html("Index", links=tuple(f"/p{i}.html" for i in range(count))))
    return routes


# --------------------------------------------------------------------------- concurrency


@pytest.mark.parametrize(("transfers", "cap"), [(8, 4), (3, 8), (16, None)])
def test_one_job_has_transfers_requests_in_flight_within_the_host_cap(tmp_path: Path, transfers: int,
                                                                      cap: int | None) -> None:
    width = min(transfers, cap or transfers)
    with Site(fan(40), delay_s=0.01, gather=width) as site:
        ctx = make_ctx(transfers=transfers, max_connections=cap)
        files = crawl(tmp_path, [site.url + "/index.html"], ctx=ctx, follow={**FOLLOW, "max_pages": 100})
        assert site.peak == width, f"{site.peak} requests at once, expected {width}"
        assert sorted(uris(files)) == sorted([site.url + "/index.html", *(f"{site.url}/p{i}.html" for i in range(40))])
        assert all(isinstance(f, FetchedFile) for f in files)
        assert sorted(site.paths()) == sorted(["/robots.txt", "/index.html", *(f"/p{i}.html" for i in range(40))])
        assert ctx.hosts.limiters.get(site.url).peak == width
    assert lane_threads() == []


@pytest.mark.parametrize("cap", [1, 2])
def test_the_host_cap_holds_across_jobs(tmp_path: Path, cap: int) -> None:
    limiters = HostLimiters()  # the run's: every job below shares it
    with Site(fan(12), delay_s=0.02, gather=cap) as site:
        results: list[int] = []
        errors: list[BaseException] = []

        def job(n: int) -> None:
            try:
                ctx = make_ctx(transfers=4, max_connections=cap, limiters=limiters)
                results.append(len(crawl(tmp_path / str(n), [site.url + "/index.html"], ctx=ctx, follow=FOLLOW)))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        jobs = [threading.Thread(target=job, args=(n,)) for n in range(3)]
        for t in jobs:
            t.start()
        for t in jobs:
            t.join(60)
        assert not errors and results == [13, 13, 13]
        assert site.peak == cap, f"peak {site.peak} with limits.max_connections={cap}"


@pytest.mark.parametrize("cap", [1, 2])
def test_a_job_admitted_on_the_host_uses_its_own_slot_and_more(tmp_path: Path, cap: int) -> None:
    """As the executor runs it: the job was admitted holding one slot of the host, which serves
    its requests too; with the cap at 1 the extra lanes take that slot in turn (never stall)."""
    stop = threading.Event()
    limiters = HostLimiters(stop)
    with Site(fan(10), delay_s=0.01, gather=cap) as site:
        limiters.declare(site.url, concurrency=cap)
        assert limiters.try_acquire(WebModule.hosts(resolve_source({"urls": [site.url]}, WebModule.source_schema)))
        ctx = dataclasses.replace(make_ctx(stop, transfers=4, limiters=limiters),
                                  hosts=JobHosts(limiters, admitted=[site.url], concurrency=cap))
        guard = threading.Timer(30, stop.set)  # a stalled crawl ends here instead of hanging the suite
        guard.start()
        try:
            files = crawl(tmp_path, [site.url + "/index.html"], ctx=ctx, follow=FOLLOW)
        finally:
            guard.cancel()
        assert not stop.is_set() and len(files) == 11
        assert site.peak == cap and limiters.get(site.url).peak == cap


def test_the_scope_is_the_same_whatever_order_pages_arrive(tmp_path: Path) -> None:
    """max_pages and max_depth cut the crawl at the same URLs with 1 lane or 8, the answers
    arriving in another order (each page takes its own time); max_pages is exact."""
    routes: dict[str, Route] = {"/index.html": Page(html("Index", links=tuple(f"/s{i}.html" for i in range(6))))}
    for i in range(6):
        leaves = tuple(f"/s{i}/l{j}.html" for j in range(8)) + (f"/s{(i + 1) % 6}/l0.html",)
        routes[f"/s{i}.html"] = Page(html(f"S{i}", links=leaves), delay_s=0.005 * ((5 - i) % 6))
        routes.update({f"/s{i}/l{j}.html": Page(html(f"L{i}.{j}", links=("/index.html", "/deeper.html")),
                                                delay_s=0.002 * ((i * 7 + j) % 5)) for j in range(8)})
    routes["/deeper.html"] = Page(html("Deeper"))
    with Site(routes) as site:
        follow = {**FOLLOW, "max_pages": 20, "max_depth": 2}
        one = crawl(tmp_path / "1", [site.url + "/index.html"], ctx=make_ctx(transfers=1), follow=follow)
        requested_one = site.paths()
        site.requests.clear()
        many = crawl(tmp_path / "8", [site.url + "/index.html"], ctx=make_ctx(transfers=8), follow=follow)
        requested_many = site.paths()
    assert len(one) == 21, "the start URL and exactly max_pages linked pages"
    assert sorted(uris(many)) == sorted(uris(one))
    assert sorted(requested_many) == sorted(requested_one) and len(set(requested_many)) == len(requested_many)
    # breadth first: every section before any leaf, the six sections and 14 leaves of s0, s1
    assert {u.removeprefix(site.url) for u in uris(one)} == {
        "/index.html", *(f"/s{i}.html" for i in range(6)), *(f"/s0/l{j}.html" for j in range(8)),
        "/s1/l0.html", *(f"/s1/l{j}.html" for j in range(1, 6))}


def test_a_url_reached_by_a_link_and_by_redirects_in_other_lanes_is_fetched_once(tmp_path: Path) -> None:
    links = tuple(f"/r{i}" for i in range(6)) + ("/final.html",)
    routes: dict[str, Route] = {f"/r{i}": Page("", 302, {"Location": "/final.html"}, delay_s=0.01) for i in range(6)}
    routes.update({"/index.html": Page(html("Index", links=links)), "/final.html": Page(html("Final"), delay_s=0.02)})
    with Site(routes) as site:
        files = crawl(tmp_path, [site.url + "/index.html"], ctx=make_ctx(transfers=8), follow=FOLLOW)
        assert sorted(uris(files)) == [site.url + "/final.html", site.url + "/index.html"]
        assert site.paths().count("/final.html") == 1 and site.paths().count("/robots.txt") == 1


# --------------------------------------------------------------------------- delay and rate


def test_delay_s_spaces_request_starts_with_many_lanes(tmp_path: Path) -> None:
    with Site(fan(6)) as site:
        ctx = make_ctx(transfers=4, max_connections=4, delay_s=0.15)
        files = crawl(tmp_path, [site.url + "/index.html"], ctx=ctx, follow=FOLLOW)
        assert len(files) == 7
        assert len(site.times) == 8, "robots.txt is spaced as well"
        assert_spaced(site.times, 0.15)


def test_rate_limit_paces_every_request_across_jobs(tmp_path: Path) -> None:
    limiters = HostLimiters()
    routes = fan(5)
    routes["/robots.txt"] = Page("User-agent: *\nAllow: /\n", headers={"Content-Type": "text/plain"})
    with Site(routes) as site:
        errors: list[BaseException] = []

        def job(n: int) -> None:
            try:
                ctx = make_ctx(transfers=3, max_connections=4, requests_per_s=20, limiters=limiters)
                assert len(crawl(tmp_path / str(n), [site.url + "/index.html"], ctx=ctx, follow=FOLLOW)) == 6
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        jobs = [threading.Thread(target=job, args=(n,)) for n in range(2)]
        for t in jobs:
            t.start()
        for t in jobs:
            t.join(60)
        assert not errors
        assert site.paths().count("/robots.txt") == 2, "robots.txt requests are paced too"
        assert len(site.times) == 14
        assert_spaced(site.times, 1 / 20)


# --------------------------------------------------------------------------- stop and read-ahead


@pytest.mark.parametrize("cap", [None, 1])
def test_stop_mid_crawl_ends_at_a_page_boundary(tmp_path: Path, cap: int | None) -> None:
    stop = threading.Event()
    with Site(fan(60, delay_s=0.05)) as site:
        ctx = make_ctx(stop, transfers=4, max_connections=cap)
        mod = module([site.url + "/index.html"], ctx, follow={**FOLLOW, "max_pages": 100})
        got = []
        for item in mod.fetch(tmp_path):
            got.append(item)
            if len(got) == 3:
                stop.set()  # Ctrl-C: lanes waiting for a slot give up, transfers in flight are cut
        mod.close()
        ctx.resources.close()
        assert len(got) == 3, "nothing is yielded once the run stops"
        assert all(isinstance(f, FetchedFile) and f.path.stat().st_size == f.size for f in got)
        assert len(site.paths()) < 62, "the crawl did not go on"
    assert lane_threads() == []


def test_the_framework_may_stop_asking_at_any_page(tmp_path: Path) -> None:
    with Site(fan(30, delay_s=0.02)) as site:
        ctx = make_ctx(transfers=4)
        mod = module([site.url + "/index.html"], ctx, follow=FOLLOW, obey_robots=False)
        pages = mod.fetch(tmp_path)
        assert next(pages).source_uri == site.url + "/index.html"
        next(pages)
        pages.close()  # as the runner does when a job is cut short: the lanes are done with
        assert lane_threads() == []
        requested = len(site.paths())
        assert requested <= 2 + PAGES_PER_LANE * 4, "no more than the read-ahead was requested"
        mod.close()
        ctx.resources.close()
        assert len(site.paths()) == requested


def test_read_ahead_is_bounded_while_pages_wait_to_be_taken(tmp_path: Path) -> None:
    """While the framework holds a page (validating, uploading), at most PAGES_PER_LANE x
    transfers more are requested: what is downloaded and not yet taken stays bounded."""
    transfers = 2
    bound = 1 + PAGES_PER_LANE * transfers  # the index, then the read-ahead
    with Site(fan(40)) as site:
        ctx = make_ctx(transfers=transfers)
        mod = module([site.url + "/index.html"], ctx, follow=FOLLOW, obey_robots=False)
        pages = mod.fetch(tmp_path)
        next(pages)  # the index: the lanes have the read-ahead to download meanwhile
        tick = threading.Event()
        for _ in range(250):
            if len(site.paths()) >= bound or tick.wait(0.02):
                break
        for _ in range(15):  # a while longer: the lanes would go on here if nothing held them back
            if len(site.paths()) > bound or tick.wait(0.02):
                break
        assert len(site.paths()) == bound
        assert len(list(pages)) == 40
        mod.close()
        ctx.resources.close()


# --------------------------------------------------------------------------- sessions, cookies


def test_cookies_are_kept_for_the_job_across_lanes_and_never_given_to_another_job(tmp_path: Path) -> None:
    routes = fan(8)
    index = html("Index", links=tuple(f"/p{i}.html" for i in range(8)))
    routes["/index.html"] = lambda n: Page(index, headers={"Content-Type": "text/html",
                                                           "Set-Cookie": f"sid=job-{n}; Path=/"})
    with Site(routes) as site:
        ctx = make_ctx(transfers=4)  # one run: both jobs share its session pool
        for n in (1, 2):
            mod = module([site.url + "/index.html"], ctx, follow=FOLLOW, obey_robots=False)
            assert len(list(mod.fetch(tmp_path / str(n)))) == 9
            mod.close()
        ctx.resources.close()
        cookies = [(path, headers.get("Cookie")) for path, headers in zip(site.requests, site.headers)]
    first, second = cookies[:9], cookies[9:]
    assert first[0] == ("/index.html", None) and second[0] == ("/index.html", None)
    assert {c for _, c in first[1:]} == {"sid=job-1"}, "every lane sends the job's cookie"
    assert {c for _, c in second[1:]} == {"sid=job-2"}, "the next job starts without the first one's"


# --------------------------------------------------------------------------- what the executor reads


def test_hosts_are_the_limiter_keys_of_the_start_urls() -> None:
    source = resolve_source({"urls": ["HTTP://Example.com/a", "http://example.com:80/b", "https://example.com/c",
                                      "http://127.0.0.1:8000/"]}, WebModule.source_schema)
    assert WebModule.hosts(source) == ("http://example.com:80", "https://example.com:443", "http://127.0.0.1:8000")
    assert all(host == host_of(host) for host in WebModule.hosts(source))


def test_declares_what_it_supports() -> None:
    assert WebModule.supports == frozenset({"incremental", "rate_limit", "transfers", "delay"})
    assert WebModule.default_max_connections == 8
