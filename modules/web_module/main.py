"""The ``web`` source module: HTML pages of a site, from start URLs along followed links.

Source keys read (``source`` of a ``type: web`` service; defaults in
:attr:`WebModule.source_schema`): ``urls``, ``follow`` (``selector``, ``max_pages``,
``max_depth``), ``allowed_hosts``, ``obey_robots``, ``user_agent``, ``delay_s``,
``max_connections_per_host``, ``max_page_bytes``, ``extract``, ``headers`` (secret
values), ``verify_tls``. The job's ``timeout_s`` is the connect and read timeout.

The crawl is breadth first and in document order, so it is the same on every run. Each
URL is requested at most once per job and only if it is http(s), on an allowed host and
allowed by ``robots.txt`` (when ``obey_robots``); redirects are followed by hand, each
``Location`` checked the same way and by :class:`~modules.redirect_policy.RedirectPolicy`
(never from https to http, never to a link-local or metadata address). The secret
``headers`` go only to the origins (scheme, host, port) of the start URLs. Pages are
streamed into the job's workdir through the per-host gate of
:mod:`modules.web_module.politeness`; only HTML (``text/html``,
``application/xhtml+xml``) up to ``max_page_bytes`` is kept, the rest is skipped and
logged. With ``extract``, a JSON record of the fields follows each page as its own file.

Failures: 404, 410 and other final 4xx of a followed page, or a followed page still failing
after retries, yield :class:`FetchFailed`; 408/429/5xx and connection errors are retried
(waiting what ``Retry-After``, or on 429/503 ``RateLimit-Reset`` / ``X-RateLimit-Reset``,
asks: :mod:`modules.http_headers`). A start URL that cannot be fetched raises the source
error, and so do :data:`MAX_FAILURES_IN_A_ROW` failing pages in a row: the site is down.
A page over the service's ``max_file_bytes`` (when it is not above ``max_page_bytes``)
is yielded as a ``rejected`` FetchFailed. A page whose links or ``extract`` fields are
needed but which is over the HTML parse bound (:mod:`common.html_tree`: bytes, nodes,
nesting) is yielded all the same, unparsed, and :meth:`WebModule.validate` rejects it with
the reason, so it lands under the rejected prefix and its links are not followed.

Service keys used through ``ctx``: ``rate_limit`` (every request, robots.txt included,
waits for :meth:`JobContext.pace` once it holds its host slot) and ``incremental``: a
page whose links are not needed (no ``follow``, or at ``max_depth``, or ``max_pages``
already reached) and whose last manifest entry has an ``etag`` or ``last_modified`` is
asked for with ``If-None-Match`` / ``If-Modified-Since``; a ``304`` yields
:class:`Unchanged` (and its ``extract`` record too). Pages whose links are followed are
always downloaded: a 304 has no body to read links from.
"""

from __future__ import annotations

import functools
import json
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar
from urllib.parse import urljoin

import requests
import structlog

from common.exceptions import DiskFullError, Transient
from common.file_sink import FileTooLarge
from common.html_tree import HtmlTooLarge
from common.interfaces.base_module import BaseModule, FetchedFile, FetchFailed, JobContext, SourceConfig, Unchanged
from common.problems import Problem
from common.secret import reveal
from common.transfer_watchdog import Transfer, ends_on_stop, shut_response, watch
from modules.http_headers import conditional_headers, version_identity
from modules.redirect_policy import MAX_REDIRECTS, RedirectPolicy
from modules.web_module.config import SOURCE_SCHEMA
from modules.web_module.exceptions import (
    REDIRECT_STATUSES,
    WebSourceError,
    WebTransientError,
    raise_for_status,
    translate_request_error,
)
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
from modules.web_module.politeness import GateInterrupted, gate_for, thread_session
from modules.web_module.robots import RobotsRules, read_robots_answer

__all__ = ["WebModule"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: Bytes read from a response body at a time.
CHUNK_SIZE = 64 * 1024
#: This many pages failing one after another (after retries) means the site itself is failing.
MAX_FAILURES_IN_A_ROW = 5
#: One page download may take at most this many times ``timeout_s`` in all (a trickling server).
BODY_DEADLINE_FACTOR = 5
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


class _Skip(Exception):
    """The URL is not fetched (not allowed, robots, not HTML, too large); logged, not an error."""


class WebModule(BaseModule):
    """Crawls HTML pages from ``urls`` (see the module docstring for its keys)."""

    source_schema: ClassVar[Mapping[str, Any]] = SOURCE_SCHEMA

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
        self._secret_headers = {str(k): str(reveal(v)) for k, v in source["headers"].items()}
        self._user_agent: str = source["user_agent"]
        self._robots = RobotsRules(source["user_agent"], self._robots_text) if source["obey_robots"] else None
        self._done: set[str] = set()
        self._unparsed: dict[str, str] = {}
        """Page name -> why it could not be parsed (over the HTML parse bound): rejected by validate."""
        self._transfer: Transfer | None = None
        """The watched transfer of the request in flight (see :meth:`_exchange`)."""

    # -- the contract ---------------------------------------------------------------

    @ends_on_stop
    def fetch(self, workdir: Path) -> Iterator[FetchedFile | FetchFailed | Unchanged]:
        """Each HTML page, breadth first from ``urls``, each followed by its ``extract`` record if any.

        An unchanged page (``304`` to a conditional request) is yielded as :class:`Unchanged`,
        and so is its ``extract`` record; a page over ``max_file_bytes`` as a rejected FetchFailed.
        Raises :class:`WebSourceError` (``WebTransientError`` when retrying may help) when
        a start URL cannot be fetched or MAX_FAILURES_IN_A_ROW pages fail in a row.
        """
        if not self.source["verify_tls"]:
            log.warning("web_tls_verification_disabled")
        thread_session().cookies.clear()  # cookies of another job on this thread stay with it
        frontier: deque[tuple[str, int, bool]] = deque((url, 0, True) for url in self._starts)
        queued = set(self._starts)
        linked = pages = failed = unchanged = in_a_row = 0
        beyond = 0  # allowed links left out once max_pages was reached (per page linking them)
        log.info("web_crawl_started", urls=len(self._starts), max_pages=self._max_pages, max_depth=self._max_depth)
        while frontier:
            if self.ctx.stop.is_set():
                log.info("web_crawl_stopped", pages=pages, queued=len(frontier))
                return
            url, depth, start = frontier.popleft()
            if url in self._done:
                continue
            # A page whose links will be followed needs its body: never asked for conditionally.
            needs_links = self._follow is not None and depth < self._max_depth and linked < self._max_pages
            try:
                result = self._fetch_page(url, workdir, conditional=not needs_links)
            except GateInterrupted:
                return
            except FileTooLarge as exc:
                in_a_row = 0
                uri = str(exc.fields.get("uri", url))  # after redirects: the URL that answered
                log.warning("web_page_rejected", url=uri, reason=str(exc))
                yield FetchFailed(page_name(uri), uri, str(exc), status="rejected")
                continue
            except DiskFullError as exc:  # local: this page fails, the crawl goes on
                yield FetchFailed(page_name(url), url, str(exc))
                continue
            except WebSourceError as exc:
                if self.ctx.stop.is_set():
                    return
                in_a_row = in_a_row + 1 if isinstance(exc, Transient) else 0
                if start or in_a_row >= MAX_FAILURES_IN_A_ROW:
                    raise
                failed += 1
                log.warning("web_page_failed", url=url, error=str(exc))
                yield FetchFailed(page_name(url), url, str(exc))
                continue
            in_a_row = 0
            if result is None:
                continue
            if isinstance(result, Unchanged):
                unchanged += 1
                yield result
                if self._extract:
                    uri = result.source_uri + "#extract"
                    yield Unchanged(record_name(result.name), uri, self.ctx.previous.get(uri, {}))
                continue
            file, final_url = result
            # Read before yielding: the framework removes the file once it is uploaded.
            try:
                parsed = parse_page(file.path, final_url, self._follow if depth < self._max_depth else None,
                                    self._extract)
            except HtmlTooLarge as exc:
                log.warning("web_page_not_parsed", url=final_url, reason=str(exc))
                self._unparsed[file.name] = str(exc)
                pages += 1
                yield file
                continue
            pages += 1
            yield file
            if parsed.record is not None:
                yield self._record(workdir, file, parsed.record)
            for link in parsed.links:
                if link in queued or not self._hosts.allows(link):
                    continue
                if linked >= self._max_pages:
                    beyond += 1
                    continue
                queued.add(link)
                frontier.append((link, depth + 1, False))
                linked += 1
        if beyond:  # the crawl's configured scope, not a failure: see docs/sources/web.md
            log.warning("web_max_pages_reached", max_pages=self._max_pages, links_not_followed=beyond)
        log.info("web_crawl_finished", pages=pages, failed=failed, unchanged=unchanged, linked=linked)

    def validate(self, file: FetchedFile) -> list[Problem] | None:
        """A page too large to parse for its links and fields is rejected with the reason;
        any other file goes through the service's ``validate`` section."""
        reason = self._unparsed.pop(file.name, None)
        if reason is not None:
            return [Problem(f"links and extract fields not read: {reason}", location="document")]
        return super().validate(file)

    # -- one page ---------------------------------------------------------------------

    def _fetch_page(self, url: str, workdir: Path,
                    conditional: bool = False) -> tuple[FetchedFile, str] | Unchanged | None:
        """The page at ``url`` after redirects, with its final URL; None when it is skipped.

        With ``conditional``, each URL the last manifest recorded with version marks is
        asked for with If-None-Match / If-Modified-Since, and a 304 gives :class:`Unchanged`.
        """
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
            self._done.add(current)
            version = self._previous_version(current) if conditional else {}
            take = functools.partial(self._take_page, url=current, workdir=workdir, previous=version)
            answer = self.ctx.retry.call(self._exchange, current, take, conditional_headers(version),
                                         what=f"GET {current}")
            if answer.kind == "skipped":
                log.info("web_page_skipped", url=current, reason=answer.reason)
                return None
            if answer.kind == "unchanged":
                log.info("web_page_unchanged", url=current, redirects=hop)
                return Unchanged(page_name(current), current, answer.identity or version)
            if answer.kind == "page":
                assert answer.file is not None
                log.info("web_page_fetched", url=current, bytes=answer.file.size, redirects=hop)
                return answer.file, current
            target = normalize_url(answer.location or "")
            refusal = self._policy.refusal(current, target) if target is not None else "not an http(s) URL"
            if refusal is None and target in self._done:
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

    def _check_allowed(self, url: str) -> None:
        if not self._hosts.allows(url):
            raise _Skip(f"host {host_key(url)} is not in allowed_hosts")
        if self._robots is not None and not self._robots.allowed(url):
            raise _Skip("disallowed by robots.txt")

    def _take_page(self, response: requests.Response, url: str, workdir: Path,
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
                if self._transfer is not None:
                    self._transfer.arrived(len(chunk))
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

    # -- robots.txt -------------------------------------------------------------------

    def _robots_text(self, url: str) -> tuple[int, str]:
        """(status, text) of a robots.txt, redirects followed within the allowed hosts."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            status, text, location = self.ctx.retry.call(self._exchange, current, read_robots_answer,
                                                         what=f"GET {current}")
            if location is None:
                return status, text
            target = normalize_url(urljoin(current, location))
            refusal = self._policy.refusal(current, target) if target is not None else "not an http(s) URL"
            if refusal is not None or target is None:
                log.info("web_robots_redirect_not_followed", url=current, location=location, reason=refusal)
                return 404, ""
            current = target
        return 404, ""

    # -- HTTP -------------------------------------------------------------------------

    def _headers_for(self, url: str) -> dict[str, str]:
        """The User-Agent, and the secret ``headers`` when ``url`` is on a start URL's origin."""
        secret = self._secret_headers if self._policy.sends_credentials(url) else {}
        return {**secret, "User-Agent": self._user_agent}

    def _exchange(self, url: str, take: Callable[[requests.Response], T],
                  headers: Mapping[str, str] | None = None) -> T:
        """One GET of ``url`` (redirects not followed) inside the host's gate, paced by the service's
        ``rate_limit``; ``take`` reads the answer. ``headers`` are added to the source's, whose
        secret ``headers`` go only to the start URLs' origins."""
        gate = gate_for(host_key(url))
        pace = self.ctx.pace if self.ctx.pacer is not None else None
        with gate.slot(self.source["max_connections_per_host"], self.source["delay_s"], self.ctx.stop, pace):
            try:
                response = thread_session().get(
                    url, headers={**self._headers_for(url), **(headers or {})},
                    timeout=(self.ctx.timeout_s, self.ctx.timeout_s),
                    allow_redirects=False, stream=True, verify=self.source["verify_tls"])
            except requests.RequestException as exc:
                raise translate_request_error(exc, url) from exc
            try:
                with watch(f"GET {url}", self.ctx.stop, self.ctx.timeout_s, cut=lambda: shut_response(response),
                           stalled=lambda msg: WebTransientError(msg, url=url, retry_after=None)) as transfer:
                    self._transfer = transfer
                    return take(response)
            except requests.RequestException as exc:
                raise translate_request_error(exc, url) from exc
            finally:
                self._transfer = None
                response.close()
