"""The ``web`` source module: HTML pages of a site, from start URLs along followed links.

Source keys read (``source`` of a ``type: web`` service; defaults in
:attr:`WebModule.source_schema`): ``urls``, ``follow`` (``selector``, ``max_pages``,
``max_depth``), ``allowed_hosts``, ``obey_robots``, ``user_agent``, ``max_page_bytes``,
``extract``, ``headers`` (secret values), ``verify_tls``. The job's ``timeout_s`` is the
connect and read timeout.

The crawl: up to ``transfers`` requests are in flight at once in one job (``ctx.lanes()``),
fed by a breadth-first frontier (:mod:`modules.web_module.frontier`): start URLs first, then
links in document order, each URL at most once per job; the links of a page join the
frontier only after every page handed out before it finished, so ``max_pages`` and
``max_depth`` cut the crawl at the same URLs on every run, whatever order answers come in.
Pages are yielded as they arrive (each page followed by its ``extract`` record), so the
framework validates and lands them while the next ones download; at most 2 x ``transfers``
pages are requested and not yet yielded. A URL is requested only if it is http(s), on an
allowed host and allowed by ``robots.txt`` (when ``obey_robots``; read once per host, by one
lane while the others wait); redirects are followed by hand, each ``Location`` checked the
same way and by :class:`~modules.redirect_policy.RedirectPolicy` (never from https to http,
never to a link-local or metadata address). The secret ``headers`` go only to the origins
(scheme, host, port) of the start URLs; cookies are kept per job and go back only to the
origin that set them (:mod:`modules.http_sessions`). Only HTML (``text/html``,
``application/xhtml+xml``) up to ``max_page_bytes`` is kept, the rest is skipped and logged.
With ``extract``, a JSON record of the fields follows each page as its own file.

Every request (pages, redirect hops, retries, ``robots.txt``) goes through
:class:`~modules.web_module.client.WebClient` and holds ``ctx.slot(url)`` while it runs: the
run's per-host limiter (:mod:`common.host_limiter`) caps the connections to the host across
all jobs (``limits.max_connections``, default :attr:`WebModule.default_max_connections`) and
spaces request starts by ``limits.delay_s`` and ``rate_limit.requests_per_s``, or by the host's
``robots.txt`` ``Crawl-delay`` when that is longer (capped at 30 s; with ``obey_robots``). Sessions come
from the run's pool, one ``requests.Session`` per host checked out per request.

Failures: 404, 410 and other final 4xx of a followed page, or a followed page still failing
after retries, yield :class:`FetchFailed`; 408/429/5xx and connection errors are retried
(waiting what ``Retry-After``, or on 429/503 ``RateLimit-Reset`` / ``X-RateLimit-Reset``,
asks: :mod:`modules.http_headers`). A start URL that cannot be fetched raises the source
error, and so do :data:`MAX_FAILURES_IN_A_ROW` failing pages in a row (in the order they
finish): the site is down. A page over the service's ``max_file_bytes`` (when it is not
above ``max_page_bytes``) is yielded as a ``rejected`` FetchFailed. A page whose links or
``extract`` fields are needed but which is over the HTML parse bound (:mod:`common.html_tree`:
bytes, nodes, nesting) is yielded all the same, unparsed, and :meth:`WebModule.validate`
rejects it with the reason, so it lands under the rejected prefix and its links are not followed.

Stop: once the run's stop event is set nothing more is yielded (pages end at a page
boundary); requests in flight are cut by the transfer watchdog, those waiting for a slot give up.

Service keys used through ``ctx`` (:attr:`WebModule.supports`): ``transfers``,
``limits.delay_s``, ``rate_limit`` and ``incremental``: a page whose links are not needed (no
``follow``, or at ``max_depth``, or ``max_pages`` already reached) and whose last manifest
entry has an ``etag`` or ``last_modified`` is asked for with ``If-None-Match`` /
``If-Modified-Since``; a ``304`` yields :class:`Unchanged` (and its ``extract`` record too).
Pages whose links are followed are always downloaded: a 304 has no body to read links from.
"""

from __future__ import annotations

import functools
import json
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urljoin

import requests
import structlog

from module_system import (
    BaseModule,
    DiskFullError,
    FetchedFile,
    FetchFailed,
    FileTooLarge,
    HtmlTooLarge,
    JobContext,
    Problem,
    SourceConfig,
    Transfer,
    Transient,
    Unchanged,
    ends_on_stop,
    host_of,
)
from modules.http_headers import conditional_headers, version_identity
from modules.redirect_policy import MAX_REDIRECTS, RedirectPolicy
from modules.web_module.client import Halted, WebClient
from modules.web_module.config import SOURCE_SCHEMA
from modules.web_module.exceptions import (
    REDIRECT_STATUSES,
    WebSourceError,
    WebTransientError,
    raise_for_status,
)
from modules.web_module.frontier import Frontier, Visit
from modules.web_module.pages import (
    AllowedHosts,
    compile_selector,
    default_allowed_hosts,
    host_key,
    normalize_url,
    page_name,
    parse_page,
    record_name,
)
from modules.web_module.robots import RobotsRules

__all__ = ["WebModule"]

log = structlog.get_logger(__name__)
T = TypeVar("T")
Item = FetchedFile | FetchFailed | Unchanged

#: Bytes read from a response body at a time.
CHUNK_SIZE = 64 * 1024
#: This many pages failing one after another (after retries) means the site itself is failing.
MAX_FAILURES_IN_A_ROW = 5
#: One page download may take at most this many times ``timeout_s`` in all (a trickling server).
BODY_DEADLINE_FACTOR = 5
#: Pages requested and not yet yielded, per lane (bounds what waits on disk to be yielded).
PAGES_PER_LANE = 2
#: How often the crawl loop looks at the stop event while pages are in flight, in seconds.
STOP_POLL_S = 0.25
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})


@dataclass(frozen=True)
class _Answer:
    """What one request (no redirect followed) came to."""

    kind: Literal["page", "redirect", "skipped", "unchanged"]
    file: FetchedFile | None = None
    location: str | None = None
    reason: str = ""
    identity: Mapping[str, str] | None = None
    """For ``unchanged``: the version marks of the 304 over those recorded last run."""


@dataclass(frozen=True)
class _Visited:
    """What one visit (a URL and its redirects) came to, made in a lane for the crawl loop."""

    kind: Literal["page", "unchanged", "skipped"]
    items: tuple[FetchedFile | Unchanged, ...] = ()
    """The page (or the Unchanged page and its Unchanged ``extract`` record)."""
    final_url: str = ""
    """For a page: the URL that answered, after redirects."""


@dataclass
class _Tally:
    pages: int = 0
    failed: int = 0
    unchanged: int = 0
    in_a_row: int = 0


class _Skip(Exception):
    """The URL is not fetched (not allowed, robots, not HTML, too large); logged, not an error."""


class WebModule(BaseModule):
    """Crawls HTML pages from ``urls`` (see the module docstring for its keys)."""

    source_schema: ClassVar[Mapping[str, Any]] = SOURCE_SCHEMA
    default_max_connections: ClassVar[int | None] = 8
    """Connections to one host across all jobs of a run when the service sets no
    ``limits.max_connections`` (Scrapy's ``CONCURRENT_REQUESTS_PER_DOMAIN`` is 8 too)."""
    supports: ClassVar[frozenset[str]] = frozenset({"incremental", "rate_limit", "transfers", "delay"})

    @classmethod
    def hosts(cls, source: SourceConfig) -> tuple[str, ...]:
        """The start URLs' hosts, as the per-host limiter keys them (``http://host:port``)."""
        return tuple(dict.fromkeys(host_of(url) for url in source["urls"]))

    def __init__(self, source: SourceConfig, ctx: JobContext) -> None:
        super().__init__(source, ctx)
        follow = source["follow"]
        try:
            self._follow = compile_selector(follow["selector"]) if follow else None
            self._extract = {field: compile_selector(sel) for field, sel in source["extract"].items()}
        except ValueError as exc:
            raise WebSourceError(str(exc)) from None
        self._max_pages: int = follow["max_pages"] if follow else 0
        self._max_depth: int = follow["max_depth"] if follow else 0
        self._starts: list[str] = []
        for url in source["urls"]:
            normal = normalize_url(url)
            if normal is None:
                raise WebSourceError(f"{url}: not a usable http(s) URL", url=url)
            self._starts.append(normal)
        hosts = source["allowed_hosts"]
        self._hosts = AllowedHosts(default_allowed_hosts(source["urls"]) if hosts is None else hosts, source["urls"])
        # Credentials stay with the start URLs' origins; a redirect is followed only within the rules.
        self._policy = RedirectPolicy(self._hosts, self._starts)
        self._client = WebClient(source, ctx, self._policy)
        self._robots = (RobotsRules(source["user_agent"], self._client.robots_text, on_crawl_delay=self._crawl_delay)
                        if source["obey_robots"] else None)
        self._lock = threading.Lock()
        self._claimed: set[str] = set()
        """URLs requested (or being requested) in this job, by any lane; under ``_lock``."""
        self._unparsed: dict[str, str] = {}
        """Page name -> why it could not be parsed (over the HTML parse bound): rejected by validate."""
        self._checked: dict[str, list[Problem]] = {}
        """Page name -> what ``validate.html`` found while the crawl had the page parsed."""

    # -- the contract ---------------------------------------------------------------

    @ends_on_stop
    def fetch(self, workdir: Path) -> Iterator[Item]:
        """Each HTML page, breadth first from ``urls``, in the order they finish downloading,
        each followed by its ``extract`` record if any.

        An unchanged page (``304`` to a conditional request) is yielded as :class:`Unchanged`,
        and so is its ``extract`` record; a page over ``max_file_bytes`` as a rejected FetchFailed.
        Raises :class:`WebSourceError` (``WebTransientError`` when retrying may help) when
        a start URL cannot be fetched or MAX_FAILURES_IN_A_ROW pages fail in a row.
        """
        if not self.source["verify_tls"]:
            log.warning("web_tls_verification_disabled")
        frontier = Frontier(self._starts, self._hosts.allows, self._max_pages)
        tally = _Tally()
        window = PAGES_PER_LANE * max(1, self.ctx.transfers)
        log.info("web_crawl_started", urls=len(self._starts), max_pages=self._max_pages, max_depth=self._max_depth,
                 transfers=self.ctx.transfers)
        self._client.halt.clear()
        in_flight: dict[Future[_Visited], Visit] = {}
        finished: queue.SimpleQueue[Future[_Visited]] = queue.SimpleQueue()
        with self.ctx.lanes() as lanes:  # leaving it waits for the lanes: set halt first
            try:

                def fill() -> None:
                    while len(in_flight) < window and (visit := frontier.pop()) is not None:
                        # A page whose links will be followed needs its body: never asked for conditionally.
                        needs_links = self._follow is not None and visit.depth < self._max_depth and not frontier.full
                        future = lanes.submit(self._visit, visit, workdir, not needs_links)
                        in_flight[future] = visit
                        future.add_done_callback(finished.put)

                fill()
                while in_flight:
                    for future in sorted(_arrivals(finished), key=lambda f: in_flight[f].seq):
                        if self.ctx.stop.is_set():
                            break
                        items = self._settle(in_flight.pop(future), future, frontier, tally, workdir)
                        fill()  # the lanes go on downloading while these are handled downstream
                        yield from items
                    if self.ctx.stop.is_set():
                        log.info("web_crawl_stopped", pages=tally.pages, in_flight=len(in_flight),
                                 queued=len(frontier))
                        return
            finally:
                self._client.halt.set()
        if frontier.beyond:  # the crawl's configured scope, not a failure: see docs/sources/web.md
            log.warning("web_max_pages_reached", max_pages=self._max_pages, links_not_followed=frontier.beyond)
        log.info("web_crawl_finished", pages=tally.pages, failed=tally.failed, unchanged=tally.unchanged,
                 linked=frontier.linked)

    def validate(self, file: FetchedFile) -> list[Problem] | None:
        """A page too large to parse for its links and fields is rejected with the reason;
        any other file goes through the service's ``validate`` section."""
        with self._lock:
            reason = self._unparsed.pop(file.name, None)
            checked = self._checked.pop(file.name, None)
        if reason is not None:
            return [Problem(f"links and extract fields not read: {reason}", location="document")]
        if checked is not None:
            return checked
        return super().validate(file)

    # -- the crawl loop's side ----------------------------------------------------------

    def _settle(self, visit: Visit, future: Future[_Visited], frontier: Frontier, tally: _Tally,
                workdir: Path) -> tuple[Item, ...]:
        """What to yield for a finished visit; its links join the frontier. Raises the
        source error when a start URL failed or MAX_FAILURES_IN_A_ROW pages failed in a row."""
        try:
            visited = future.result()
        except FileTooLarge as exc:
            frontier.done(visit)
            tally.in_a_row = 0
            uri = str(exc.fields.get("uri", visit.url))  # after redirects: the URL that answered
            log.warning("web_page_rejected", url=uri, reason=str(exc))
            return (FetchFailed(page_name(uri), uri, str(exc), status="rejected"),)
        except DiskFullError as exc:  # local: this page fails, the crawl goes on
            frontier.done(visit)
            return (FetchFailed(page_name(visit.url), visit.url, str(exc)),)
        except WebSourceError as exc:
            frontier.done(visit)
            if self.ctx.stop.is_set():
                return ()
            tally.in_a_row = tally.in_a_row + 1 if isinstance(exc, Transient) else 0
            if visit.start or tally.in_a_row >= MAX_FAILURES_IN_A_ROW:
                raise
            tally.failed += 1
            log.warning("web_page_failed", url=visit.url, error=str(exc))
            return (FetchFailed(page_name(visit.url), visit.url, str(exc)),)
        tally.in_a_row = 0
        if visited.kind == "unchanged":
            tally.unchanged += 1
        if visited.kind != "page":
            frontier.done(visit)
            return visited.items
        tally.pages += 1
        page = visited.items[0]
        assert isinstance(page, FetchedFile)
        # Parsed here, in the crawl loop's thread, not in the lanes: lxml runs several times
        # slower in threads side by side than one document after another. Read before
        # yielding: the framework removes the file once it is landed.
        follow = self._follow if visit.depth < self._max_depth else None
        html_rules = getattr(self.ctx.validators, "html", None)  # validate.html, judged on the same pass
        try:
            parsed = parse_page(page.path, visited.final_url, follow, self._extract,
                                html_rules if html_rules is not None and _is_html(page.name) else None)
        except HtmlTooLarge as exc:
            log.warning("web_page_not_parsed", url=visited.final_url, reason=str(exc))
            with self._lock:
                self._unparsed[page.name] = str(exc)
            frontier.done(visit)
            return (page,)
        frontier.done(visit, parsed.links)
        if parsed.problems is not None:
            with self._lock:
                self._checked[page.name] = parsed.problems
        if parsed.record is None:
            return (page,)
        return page, self._record(workdir, page, parsed.record)

    # -- one visit, in a lane ---------------------------------------------------------

    def _visit(self, visit: Visit, workdir: Path, conditional: bool) -> _Visited:
        """Fetch ``visit``, following redirects. Runs in a lane; raises what :meth:`_fetch_page` raises."""
        if self._client.halt.is_set():
            raise Halted()
        result = self._fetch_page(visit.url, workdir, conditional)
        if result is None:
            return _Visited("skipped")
        if isinstance(result, Unchanged):
            if not self._extract:
                return _Visited("unchanged", (result,))
            uri = result.source_uri + "#extract"
            return _Visited("unchanged", (result, Unchanged(record_name(result.name), uri, self.ctx.previous.get(uri, {}))))
        file, final_url = result
        return _Visited("page", (file,), final_url)

    def _claim(self, url: str) -> bool:
        """True the first time ``url`` is about to be requested in this job (by any lane)."""
        with self._lock:
            if url in self._claimed:
                return False
            self._claimed.add(url)
            return True

    # -- one page ---------------------------------------------------------------------

    def _fetch_page(self, url: str, workdir: Path,
                    conditional: bool = False) -> tuple[FetchedFile, str] | Unchanged | None:
        """The page at ``url`` after redirects, with its final URL; None when it is skipped.

        With ``conditional``, each URL the last manifest recorded with version marks is
        asked for with If-None-Match / If-Modified-Since, and a 304 gives :class:`Unchanged`.
        """
        if not self._claim(url):  # already fetched, through a redirect
            return None
        current, previous = url, ""
        for hop in range(MAX_REDIRECTS + 1):
            try:
                self._check_allowed(current)
            except _Skip as skip:
                if hop:
                    log.info("web_redirect_not_followed", url=previous, location=current, reason=str(skip))
                else:
                    log.info("web_page_skipped", url=current, reason=str(skip))
                return None
            version = self._previous_version(current) if conditional else {}
            take = functools.partial(self._take_page, url=current, workdir=workdir, previous=version)
            answer = self.ctx.retry.call(self._client.get, current, take, conditional_headers(version),
                                         what=f"GET {current}")
            if answer.kind == "skipped":
                log.info("web_page_skipped", url=current, reason=answer.reason)
                return None
            if answer.kind == "unchanged":
                log.info("web_page_unchanged", url=current, redirects=hop)
                return Unchanged(page_name(current), current, answer.identity or version)
            if answer.kind == "page":
                assert answer.file is not None
                log.debug("web_page_fetched", url=current, bytes=answer.file.size, redirects=hop)
                return answer.file, current
            target = normalize_url(answer.location or "")
            refusal = self._policy.refusal(current, target) if target is not None else "not an http(s) URL"
            if refusal is None and target is not None and not self._claim(target):
                refusal = "already fetched"
            if refusal is not None or target is None:
                log.info("web_redirect_not_followed", url=current, location=answer.location, reason=refusal)
                return None
            log.debug("web_redirect", url=current, location=target)
            current, previous = target, current
        raise WebSourceError(f"{url}: more than {MAX_REDIRECTS} redirects", url=url)

    def _previous_version(self, url: str) -> dict[str, str]:
        """The version marks (etag, last_modified) the last manifest recorded for ``url``, when a
        304 could stand for everything the page yielded then (its ``extract`` record landed too)."""
        if self._extract and url + "#extract" not in self.ctx.previous:
            return {}
        before = self.ctx.previous.get(url, {})
        return {k: before[k] for k in ("etag", "last_modified") if before.get(k)}

    def _crawl_delay(self, origin: str, delay_s: float) -> None:
        """A robots.txt ``Crawl-delay``: the host's politeness delay for the whole run, when longer."""
        self.ctx.hosts.limiters.get(host_of(origin)).tighten(delay_s=delay_s)
        log.info("web_crawl_delay", origin=origin, delay_s=delay_s)

    def _check_allowed(self, url: str) -> None:
        if not self._hosts.allows(url):
            raise _Skip(f"host {host_key(url)} is not in allowed_hosts")
        if self._robots is not None and not self._robots.allowed(url):
            raise _Skip("disallowed by robots.txt")

    def _take_page(self, response: requests.Response, transfer: Transfer, url: str, workdir: Path,
                   previous: Mapping[str, str]) -> _Answer:
        """The page body streamed into a sink, or why not.

        ``previous``: the version marks sent as conditional headers (empty: none sent).
        Raises FileTooLarge when the page is over ``max_file_bytes`` (the smaller limit).
        """
        status = response.status_code
        if status in REDIRECT_STATUSES and response.headers.get("Location"):
            return _Answer("redirect", location=urljoin(url, response.headers["Location"]))
        if status == 304 and previous:
            return _Answer("unchanged", identity={**previous, **version_identity(response.headers)})
        raise_for_status(response, url)
        if not 200 <= status < 300 or status == 204:
            return _Answer("skipped", reason=f"HTTP {status}")
        media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media not in HTML_TYPES:
            return _Answer("skipped", reason=f"content type {media or 'missing'} is not HTML")
        limit = min(self.source["max_page_bytes"], self.ctx.max_file_bytes)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            return self._too_large(url, f"{declared} bytes declared")
        deadline = time.monotonic() + BODY_DEADLINE_FACTOR * self.ctx.timeout_s
        with self.ctx.new_file(workdir, page_name(url), url, version_identity(response.headers)) as sink:
            for chunk in response.iter_content(CHUNK_SIZE):
                transfer.arrived(len(chunk))
                if sink.size + len(chunk) > limit:
                    sink.abort()
                    return self._too_large(url, f"more than {limit} bytes")
                sink.write(chunk)
                if time.monotonic() > deadline:
                    raise WebTransientError(f"{url}: body not read within {BODY_DEADLINE_FACTOR}x timeout_s",
                                            url=url, retry_after=None)
            return _Answer("page", file=sink.finish())

    def _too_large(self, url: str, size: str) -> _Answer:
        """The smaller limit applies: over ``max_file_bytes`` raises FileTooLarge (the page is
        rejected, in the manifest), over ``max_page_bytes`` skips it (logged only)."""
        page_limit: int = self.source["max_page_bytes"]
        if self.ctx.max_file_bytes <= page_limit:
            raise FileTooLarge(f"{url}: {size}, over max_file_bytes ({self.ctx.max_file_bytes})",
                               uri=url, max_bytes=self.ctx.max_file_bytes)
        return _Answer("skipped", reason=f"{size}, max_page_bytes is {page_limit}")

    def _record(self, workdir: Path, page: FetchedFile, record: dict[str, str | None]) -> FetchedFile | FetchFailed:
        """The ``extract`` record of ``page`` as its own file (source URI: the page's, ``#extract``)."""
        name, uri = record_name(page.name), page.source_uri + "#extract"
        try:
            with self.ctx.new_file(workdir, name, uri) as sink:
                sink.write(json.dumps(record, ensure_ascii=False, indent=2).encode("utf-8"))
                return sink.finish()
        except FileTooLarge as exc:
            return FetchFailed(name, uri, str(exc), status="rejected")
        except DiskFullError as exc:
            return FetchFailed(name, uri, str(exc))


def _arrivals(finished: queue.SimpleQueue[Future[T]]) -> list[Future[T]]:
    """The visits finished by now: waits for one (at most STOP_POLL_S), then takes those also done."""
    try:
        arrived = [finished.get(timeout=STOP_POLL_S)]
    except queue.Empty:
        return []
    while True:
        try:
            arrived.append(finished.get_nowait())
        except queue.Empty:
            return arrived


def _is_html(name: str) -> bool:
    """Whether the service's ``validate.html`` is what checks a file of this name."""
    return name.rstrip().lower().endswith((".html", ".htm"))
