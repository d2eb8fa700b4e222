"""The ``web`` source module: HTML pages of a site, from start URLs along followed links.

Source keys read (``source`` of a ``type: web`` service; defaults in
:attr:`WebModule.source_schema`): ``urls``, ``follow`` (``selector``, ``max_pages``,
``max_depth``), ``allowed_hosts``, ``obey_robots``, ``user_agent``, ``delay_s``,
``max_connections_per_host``, ``max_page_bytes``, ``extract``, ``headers`` (secret
values), ``verify_tls``. The job's ``timeout_s`` is the connect and read timeout.

The crawl is breadth first and in document order, so it is the same on every run. Each
URL is requested at most once per job and only if it is http(s), on an allowed host and
allowed by ``robots.txt`` (when ``obey_robots``); redirects are followed by hand, each
``Location`` checked the same way. Pages are streamed into the job's workdir through the
per-host gate of :mod:`modules.web_module.politeness`; only HTML (``text/html``,
``application/xhtml+xml``) up to ``max_page_bytes`` is kept, the rest is skipped and
logged. With ``extract``, a JSON record of the fields follows each page as its own file.

Failures: 404, 410 and other final 4xx of a followed page, or a followed page still failing
after retries, yield :class:`FetchFailed`; 408/429/5xx and connection errors are retried
(``Retry-After`` honoured). A start URL that cannot be fetched raises the source error,
and so do :data:`MAX_FAILURES_IN_A_ROW` failing pages in a row: the site is down.
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

from common.exceptions import Transient
from common.interfaces.base_module import BaseModule, FetchedFile, FetchFailed, JobContext, SourceConfig
from common.secret import reveal
from modules.web_module.exceptions import (
    WebHttpError,
    WebSourceError,
    WebTransientError,
    is_retryable_status,
    parse_retry_after,
    translate_request_error,
)
from modules.web_module.pages import (
    HostMatcher,
    compile_selector,
    default_allowed_hosts,
    host_key,
    normalize_url,
    page_name,
    parse_page,
    record_name,
)
from modules.web_module.politeness import GateInterrupted, gate_for, thread_session
from modules.web_module.robots import MAX_ROBOTS_BYTES, RobotsRules

__all__ = ["WebModule"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

#: Bytes read from a response body at a time.
CHUNK_SIZE = 64 * 1024
#: Redirect hops followed from one URL.
MAX_REDIRECTS = 5
#: This many pages failing one after another (after retries) means the site itself is failing.
MAX_FAILURES_IN_A_ROW = 5
#: One page download may take at most this many times ``timeout_s`` in all (a trickling server).
BODY_DEADLINE_FACTOR = 5
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_GONE = frozenset({404, 410})


@dataclass(frozen=True)
class _Answer:
    """What one request (no redirect followed) came to."""

    kind: Literal["page", "redirect", "skipped"]
    file: FetchedFile | None = None
    location: str | None = None
    reason: str = ""


class _Skip(Exception):
    """The URL is not fetched (not allowed, robots, not HTML, too large); logged, not an error."""


class WebModule(BaseModule):
    """Crawls HTML pages from ``urls`` (see the module docstring for its keys)."""

    source_schema: ClassVar[Mapping[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["urls"],
        "properties": {
            "urls": {"type": "array", "minItems": 1,
                     "items": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+"},
                     "description": "Start URLs (http or https), fetched first, in order."},
            "follow": {"type": ["object", "null"], "default": None, "additionalProperties": False,
                       "required": ["selector"],
                       "description": "Links to follow from fetched pages; null follows none.",
                       "properties": {
                           "selector": {"type": "string", "minLength": 1,
                                        "description": "CSS selector of the links (elements with href, or "
                                                       "elements holding a[href])."},
                           "max_pages": {"type": "integer", "minimum": 0, "default": 50,
                                         "description": "Most pages requested through links, start URLs "
                                                        "not counted."},
                           "max_depth": {"type": "integer", "minimum": 0, "default": 3,
                                         "description": "Most link hops from a start URL (start URLs are "
                                                        "depth 0)."}}},
            "allowed_hosts": {"type": ["array", "null"], "default": None,
                              "items": {"type": "string", "minLength": 1},
                              "description": "Hosts that may be requested, 'host' (default ports) or "
                                             "'host:port'; null: the hosts of the start URLs."},
            "obey_robots": {"type": "boolean", "default": True,
                            "description": "Read each host's robots.txt and skip what it disallows."},
            "user_agent": {"type": "string", "minLength": 1,
                           "default": "module_system/0.1 (+https://example.invalid/module_system/bot)",
                           "description": "User-Agent header, also the name robots.txt rules are matched on."},
            "delay_s": {"type": "number", "minimum": 0, "default": 0,
                        "description": "Least seconds between two request starts to one host, across all "
                                       "jobs of the process."},
            "max_connections_per_host": {"type": "integer", "minimum": 1, "default": 2,
                                         "description": "Most requests in flight to one host, across all "
                                                        "jobs of the process."},
            "max_page_bytes": {"type": "integer", "minimum": 1, "default": 10 * 1024 * 1024,
                               "description": "Larger pages are skipped (checked while streaming)."},
            "extract": {"type": "object", "default": {},
                        "additionalProperties": {"type": "string", "minLength": 1},
                        "description": "Field name to CSS selector: a JSON record <page>.json of the text "
                                       "of each first match (or null) is written beside each page."},
            "headers": {"type": "object", "default": {},
                        "additionalProperties": {"type": "string", "x-secret": True},
                        "description": "Extra request headers (values are secret: never logged)."},
            "verify_tls": {"type": "boolean", "default": True,
                           "description": "Verify https certificates; false only for trusted test servers."},
        },
    }

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
        self._hosts = HostMatcher(default_allowed_hosts(source["urls"]) if hosts is None else hosts)
        self._headers = {str(k): str(reveal(v)) for k, v in source["headers"].items()}
        self._headers["User-Agent"] = source["user_agent"]
        self._robots = RobotsRules(source["user_agent"], self._robots_text) if source["obey_robots"] else None
        self._done: set[str] = set()

    # -- the contract ---------------------------------------------------------------

    def fetch(self, workdir: Path) -> Iterator[FetchedFile | FetchFailed]:
        """Each HTML page, breadth first from ``urls``, each followed by its ``extract`` record if any.

        Raises :class:`WebSourceError` (``WebTransientError`` when retrying may help) when
        a start URL cannot be fetched or MAX_FAILURES_IN_A_ROW pages fail in a row.
        """
        if not self.source["verify_tls"]:
            log.warning("web_tls_verification_disabled")
        thread_session().cookies.clear()  # cookies of another job on this thread stay with it
        frontier: deque[tuple[str, int, bool]] = deque((url, 0, True) for url in self._starts)
        queued = set(self._starts)
        linked = pages = failed = in_a_row = 0
        log.info("web_crawl_started", urls=len(self._starts), max_pages=self._max_pages, max_depth=self._max_depth)
        while frontier:
            if self.ctx.stop.is_set():
                log.info("web_crawl_stopped", pages=pages, queued=len(frontier))
                return
            url, depth, start = frontier.popleft()
            if url in self._done:
                continue
            try:
                result = self._fetch_page(url, workdir)
            except GateInterrupted:
                return
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
            file, final_url = result
            # Read before yielding: the framework removes the file once it is uploaded.
            parsed = parse_page(file.path, final_url, self._follow if depth < self._max_depth else None,
                                self._extract)
            pages += 1
            yield file
            if parsed.record is not None:
                yield self._record(workdir, file, parsed.record)
            for link in parsed.links:
                if linked >= self._max_pages:
                    break
                if link not in queued and self._hosts.allows(link):
                    queued.add(link)
                    frontier.append((link, depth + 1, False))
                    linked += 1
        log.info("web_crawl_finished", pages=pages, failed=failed, linked=linked)

    # -- one page ---------------------------------------------------------------------

    def _fetch_page(self, url: str, workdir: Path) -> tuple[FetchedFile, str] | None:
        """The page at ``url`` after redirects, with its final URL; None when it is skipped."""
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
            take = functools.partial(self._take_page, url=current, workdir=workdir)
            answer = self.ctx.retry.call(self._exchange, current, take, what=f"GET {current}")
            if answer.kind == "skipped":
                log.info("web_page_skipped", url=current, reason=answer.reason)
                return None
            if answer.kind == "page":
                assert answer.file is not None
                log.info("web_page_fetched", url=current, bytes=answer.file.size, redirects=hop)
                return answer.file, current
            target = normalize_url(answer.location or "")
            if target is None or target in self._done:
                reason = "not an http(s) URL" if target is None else "already fetched"
                log.info("web_redirect_not_followed", url=current, location=answer.location, reason=reason)
                return None
            log.debug("web_redirect", url=current, location=target)
            current, previous = target, current
        raise WebSourceError(f"{url}: more than {MAX_REDIRECTS} redirects", url=url)

    def _check_allowed(self, url: str) -> None:
        if not self._hosts.allows(url):
            raise _Skip(f"host {host_key(url)} is not in allowed_hosts")
        if self._robots is not None and not self._robots.allowed(url):
            raise _Skip("disallowed by robots.txt")

    def _take_page(self, response: requests.Response, url: str, workdir: Path) -> _Answer:
        """The page body streamed into a sink, or why not."""
        status = response.status_code
        if status in _REDIRECTS and response.headers.get("Location"):
            return _Answer("redirect", location=urljoin(url, response.headers["Location"]))
        self._raise_for_status(response, url)
        if not 200 <= status < 300 or status == 204:
            return _Answer("skipped", reason=f"HTTP {status}")
        media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if media not in HTML_TYPES:
            return _Answer("skipped", reason=f"content type {media or 'missing'} is not HTML")
        limit: int = self.source["max_page_bytes"]
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            return _Answer("skipped", reason=f"{declared} bytes declared, max_page_bytes is {limit}")
        identity = {k.lower(): response.headers[k] for k in ("ETag", "Last-Modified") if k in response.headers}
        deadline = time.monotonic() + BODY_DEADLINE_FACTOR * self.ctx.timeout_s
        with self.ctx.new_file(workdir, page_name(url), url, identity) as sink:
            for chunk in response.iter_content(CHUNK_SIZE):
                if sink.size + len(chunk) > limit:
                    sink.abort()
                    return _Answer("skipped", reason=f"more than max_page_bytes ({limit}) bytes")
                sink.write(chunk)
                if time.monotonic() > deadline:
                    raise WebTransientError(f"{url}: body not read within {BODY_DEADLINE_FACTOR}x timeout_s",
                                            url=url, retry_after=None)
            return _Answer("page", file=sink.finish())

    def _record(self, workdir: Path, page: FetchedFile, record: dict[str, str | None]) -> FetchedFile:
        """The ``extract`` record of ``page`` as its own file (source URI: the page's, ``#extract``)."""
        with self.ctx.new_file(workdir, record_name(page.name), page.source_uri + "#extract") as sink:
            sink.write(json.dumps(record, ensure_ascii=False, indent=2).encode("utf-8"))
            return sink.finish()

    # -- robots.txt -------------------------------------------------------------------

    def _robots_text(self, url: str) -> tuple[int, str]:
        """(status, text) of a robots.txt, redirects followed within the allowed hosts."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            status, text, location = self.ctx.retry.call(self._exchange, current, _take_robots,
                                                         what=f"GET {current}")
            if location is None:
                return status, text
            target = normalize_url(urljoin(current, location))
            if target is None or not self._hosts.allows(target):
                log.info("web_robots_redirect_not_followed", url=current, location=location)
                return 404, ""
            current = target
        return 404, ""

    # -- HTTP -------------------------------------------------------------------------

    def _exchange(self, url: str, take: Callable[[requests.Response], T]) -> T:
        """One GET of ``url`` (redirects not followed) inside the host's gate; ``take`` reads the answer."""
        gate = gate_for(host_key(url))
        with gate.slot(self.source["max_connections_per_host"], self.source["delay_s"], self.ctx.stop):
            try:
                response = thread_session().get(
                    url, headers=self._headers, timeout=(self.ctx.timeout_s, self.ctx.timeout_s),
                    allow_redirects=False, stream=True, verify=self.source["verify_tls"])
            except requests.RequestException as exc:
                raise translate_request_error(exc, url) from exc
            try:
                return take(response)
            except requests.RequestException as exc:
                raise translate_request_error(exc, url) from exc
            finally:
                response.close()

    @staticmethod
    def _raise_for_status(response: requests.Response, url: str) -> None:
        status = response.status_code
        if is_retryable_status(status):
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise WebTransientError(f"{url}: HTTP {status} {response.reason or ''}".rstrip(), url=url,
                                    status=status, retry_after=retry_after)
        if status >= 400:
            what = "gone" if status in _GONE else "refused"
            raise WebHttpError(f"{url}: HTTP {status} {response.reason or ''} ({what})".rstrip(), url=url,
                               status=status)


def _take_robots(response: requests.Response) -> tuple[int, str, str | None]:
    """(status, text, redirect location) of a robots.txt answer; 5xx raise to be retried."""
    status = response.status_code
    if status in _REDIRECTS and response.headers.get("Location"):
        return status, "", response.headers["Location"]
    if is_retryable_status(status):
        WebModule._raise_for_status(response, response.url)
    if not 200 <= status < 300:
        return status, "", None
    body = bytearray()
    for chunk in response.iter_content(CHUNK_SIZE):
        body += chunk
        if len(body) >= MAX_ROBOTS_BYTES:
            break
    return status, bytes(body[:MAX_ROBOTS_BYTES]).decode("utf-8", errors="replace"), None
