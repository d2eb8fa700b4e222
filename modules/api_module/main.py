"""The ``api`` source module: the JSON pages of HTTP API endpoints, fetched concurrently.

Registry keys read (``source`` of a ``type: api`` service; schema in
:mod:`modules.api_module.config`, docs in ``docs/sources/api.md``):

``base_url``
    Scheme, host, port and optional base path (required).
``endpoints``
    Paths with optional query strings, appended to ``base_url`` (required, at least one).
``auth``
    ``{type: none | bearer | header | basic | oauth2_client_credentials, ...}`` (:mod:`.auth`).
``paginate``
    ``{type: none | link_header | page | cursor, ...}`` (:mod:`.pagination`).
``records_path``
    Dotted path to the records array of a page; records are then validated one by one.
``headers``, ``query``
    Extra request headers and query parameters.
``verify_tls``
    Verify HTTPS certificates (false logs a warning).
``max_response_bytes``
    A larger page fails its endpoint.
``follow_redirects``, ``allowed_hosts``
    Whether a 3xx is followed, and where to (:mod:`modules.redirect_policy`); ``auth``
    and ``headers`` go only to ``base_url``'s origin.

Flow: the requests run in the job's lanes (``ctx.lanes()``, the service's ``transfers``
wide, default :attr:`ApiModule.default_transfers`). Each endpoint's pages are read in order
(the next page is known only from the one before), but the endpoints take turns, as a
crawl frontier does: a lane that finishes a page starts a new endpoint's first page while
there are any (up to :data:`OPEN_PER_LANE` endpoints per lane open at once), else the next
page of the endpoint that has waited longest. So every lane stays busy until the last pages,
instead of the last few endpoints being walked alone while the other lanes idle. Each page
is streamed into a hashing sink as ``<endpoint-slug>-p<n>.json`` by
:class:`~.client.PageClient` and handed to the generator through a bounded queue, which
yields files in completion order. Every request holds a
connection slot of its host (``ctx.slot``): ``limits.max_connections`` (default
:attr:`ApiModule.default_max_connections`) caps requests in flight to the host across all
jobs and lanes of the run, ``rate_limit`` and ``limits.delay_s`` space their starts.
A request is retried through ``ctx.retry`` on 5xx, 408, 429 (waiting ``Retry-After``,
or on 429/503 ``RateLimit-Reset`` / ``X-RateLimit-Reset``) and connection errors; a 401
refreshes an OAuth2 token once. An endpoint failing for good is yielded as
:class:`FetchFailed`; when every endpoint fails, fetch raises. A page over the
service's ``max_file_bytes`` is yielded as a ``rejected`` FetchFailed and ends its
endpoint's walk. An endpoint that stops at ``paginate.max_pages`` while the server still
offers a next page (a ``next`` link or cursor, or a non-empty last page for ``page``
pagination) was read only in part: once every page read has been yielded, fetch raises
:class:`~common.exceptions.ListingIncomplete` and the job fails.

Incremental (service ``incremental: true``): with ``paginate: none`` only, an endpoint
whose last manifest entry has an ``etag`` or ``last_modified`` is asked for with
``If-None-Match`` / ``If-Modified-Since``, and a ``304`` yields :class:`Unchanged`.
Paginated endpoints are always read in full: the next page is found in the body (or
headers) of the one before, which a 304 does not carry.

Cursor (``cursor: {field, param, initial}``, with ``records_path``): each endpoint's first
request carries ``param=<watermark>``, the newest ``field`` of the records its last successful
job read (``ctx.cursors``, kept in the service's incremental state), or ``initial``. An endpoint
read to its end records the newest value it saw (:meth:`JobContext.advance_cursor`); the
framework keeps it only if the job succeeds, so a failed run is read again from the same
watermark. Pages of a run that sent a watermark are named ``<slug>-since-<value>-p<n>.json``,
so one increment's pages never overwrite another's.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import threading
from collections import deque
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import structlog

from module_system import (
    BaseModule,
    DiskFullError,
    FetchedFile,
    FetchFailed,
    FileTooLarge,
    JobContext,
    ListingIncomplete,
    Problem,
    SourceConfig,
    Unchanged,
    ends_on_stop,
    host_of,
    is_transient,
)
from modules.api_module.client import PageClient, PageMeta
from modules.api_module.config import SOURCE_SCHEMA, Paging, paging_from
from modules.api_module.exceptions import (
    ApiAuthError,
    ApiSourceError,
    ApiTransientError,
)
from modules.api_module.pagination import (
    MISSING,
    endpoint_url,
    is_empty_page,
    newest_value,
    next_cursor,
    page_name,
    public_url,
    resolve_next_link,
    same_origin,
    with_params,
)
from modules.api_module.records import record_problems

__all__ = ["ApiModule"]

log = structlog.get_logger(__name__)

#: How often (seconds) the generator and the workers look at the stop flags while waiting.
POLL_S = 0.1

#: Endpoints open at once per lane: they take turns, so the lanes stay busy to the end (a
#: simulated 100 endpoints x 20 pages on 16 lanes: 147 request times with one endpoint per
#: lane, 132 with 4 per lane or with all open; 125 is the bound), while what an open walk
#: keeps (the URLs it has seen) stays bounded by the job's width.
OPEN_PER_LANE = 4

#: What an endpoint's walk yields: a page on disk, a page refused (rejected) or a 304.
Item = FetchedFile | FetchFailed | Unchanged


@dataclasses.dataclass(slots=True)
class _Walk:
    """One endpoint being read: its pages, one per ``next()`` (each call sends at most one request)."""

    endpoint: str
    pages: Generator[Item, None, None]


class _EndpointTruncated(Exception):
    """An endpoint's walk stopped at ``paginate.max_pages`` with a next page still offered."""

    def __init__(self, endpoint: str, next_url: str) -> None:
        super().__init__(endpoint)
        self.endpoint, self.next_url = endpoint, next_url


class _EndpointFailed(Exception):
    """An endpoint's page could not be read: ends the endpoint's walk."""

    def __init__(self, name: str, uri: str, error: ApiSourceError) -> None:
        super().__init__(str(error))
        self.name, self.uri, self.error = name, uri, error


class ApiModule(BaseModule):
    """Reads the JSON pages of an HTTP API's endpoints (see the module docstring for its keys)."""

    source_schema: ClassVar[Mapping[str, Any]] = SOURCE_SCHEMA
    default_max_connections: ClassVar[int | None] = 4
    default_transfers: ClassVar[int] = 4
    supports: ClassVar[frozenset[str]] = frozenset({"incremental", "rate_limit", "transfers", "delay"})

    @classmethod
    def hosts(cls, source: SourceConfig) -> tuple[str, ...]:
        """The host of ``base_url`` (token and redirect hosts take their slots as they are reached)."""
        return (host_of(source["base_url"]),)

    @classmethod
    def keeps_cursors(cls, source: SourceConfig) -> bool:
        return bool(source.get("cursor"))

    def __init__(self, source: SourceConfig, ctx: JobContext) -> None:
        super().__init__(source, ctx)
        self.paging: Paging = paging_from(source["paginate"])
        self.base_url: str = source["base_url"]
        self._cancel = threading.Event()
        # Backoff waits end, and requests waiting for a slot are not sent, once this job's
        # fetch is cancelled (stop, close, the generator left).
        self._client = PageClient(source, ctx, dataclasses.replace(ctx.retry, stop=self._cancel), halt=self._cancel)

    # ------------------------------------------------------------------ fetch

    @ends_on_stop
    def fetch(self, workdir: Path) -> Iterator[Item]:
        """Every page of every endpoint, in completion order (Unchanged for a 304, a rejected
        FetchFailed for a page over ``max_file_bytes``).

        Raises :class:`~modules.api_module.exceptions.ApiAuthError` when the token
        endpoint refuses the client, ``ApiSourceError`` (``ApiTransientError`` if
        every cause was transient) when every endpoint failed, and, after the last page,
        :class:`~common.exceptions.ListingIncomplete` when an endpoint stopped at
        ``paginate.max_pages`` with more pages offered.
        """
        if self.ctx.stop.is_set():
            return
        self._cancel.clear()
        endpoints = list(dict.fromkeys(self.source["endpoints"]))
        if not self.source["verify_tls"]:
            log.warning("api_tls_verification_disabled", base_url=public_url(self.base_url))
        width = min(self.ctx.transfers, len(endpoints))
        results: queue.Queue[tuple[str, Any, Any]] = queue.Queue(maxsize=2 * width)
        lanes = self.ctx.lanes()
        pending = iter(endpoints)
        waiting: deque[_Walk] = deque()  # walks whose next page is known, oldest first
        in_flight = walks = files = succeeded = 0
        failures: list[ApiSourceError] = []
        truncated: list[_EndpointTruncated] = []
        held: list[FetchFailed] = []  # failures wait until some endpoint succeeds: all failing raises

        def submit() -> int:
            """Start the next request: a new endpoint's first page while fewer than
            :data:`OPEN_PER_LANE` x ``width`` endpoints are open, else the next page of the
            endpoint that has waited longest (the open endpoints take turns)."""
            nonlocal walks
            if self.ctx.stop.is_set():
                return 0
            endpoint = next(pending, None) if walks < OPEN_PER_LANE * width else None
            if endpoint is not None:
                walks += 1
                walk = _Walk(endpoint, self._walk(endpoint, workdir))
            elif waiting:
                walk = waiting.popleft()
            else:
                return 0
            lanes.submit(self._step, walk, results)
            return 1

        log.info("api_fetch_started", base_url=public_url(self.base_url), endpoints=len(endpoints),
                 transfers=width, paginate=self.paging.type)
        try:
            for _ in range(width):
                in_flight += submit()
            while in_flight:
                if self.ctx.stop.is_set():
                    log.info("api_fetch_stopped", files=files)
                    return
                try:
                    kind, payload, error = results.get(timeout=POLL_S)
                except queue.Empty:
                    if self._cancel.is_set():  # closed meanwhile: workers post nothing more
                        return
                    continue
                if kind == "file":
                    files += 1
                    yield from held
                    held.clear()
                    yield payload
                elif kind == "failed":
                    failures.append(error)
                    if succeeded or files:
                        yield payload
                    else:
                        held.append(payload)
                elif kind == "truncated":
                    truncated.append(payload)
                elif kind == "next":
                    in_flight -= 1
                    waiting.append(payload)
                    in_flight += submit()
                elif kind == "done":
                    in_flight -= 1
                    walks -= 1
                    succeeded += bool(payload)
                    in_flight += submit()
                else:  # "fatal"
                    raise payload
            if failures and not succeeded:
                raise self._all_failed(failures, len(endpoints))
            yield from held
            log.info("api_fetch_finished", endpoints=len(endpoints), failed=len(failures), files=files)
            if truncated:
                raise self._incomplete(truncated)
        finally:
            self._cancel.set()
            lanes.close()
            _discard(results)
            for walk in waiting:
                walk.pages.close()

    def _all_failed(self, failures: list[ApiSourceError], count: int) -> ApiSourceError:
        cls = ApiTransientError if all(is_transient(e) for e in failures) else ApiSourceError
        first = failures[0]
        return cls(f"all {count} endpoint(s) of {public_url(self.base_url)} failed; first: {first}",
                   url=public_url(self.base_url), status=getattr(first, "status", None))

    def _incomplete(self, truncated: list[_EndpointTruncated]) -> ListingIncomplete:
        names = ", ".join(t.endpoint for t in truncated)
        return ListingIncomplete(
            f"listing incomplete: {len(truncated)} endpoint(s) stopped at paginate.max_pages "
            f"({self.paging.max_pages}) while the server still offered a next page ({names}); "
            "raise max_pages to read them whole", url=public_url(self.base_url),
            endpoints=[t.endpoint for t in truncated])

    def _step(self, walk: _Walk, results: queue.Queue[tuple[str, Any, Any]]) -> None:
        """Lane task: read the next page of ``walk`` and post it, then ``next`` (the walk goes
        back in line) or ``done``; an endpoint's failure or truncation is posted before its end."""
        structlog.contextvars.bind_contextvars(thread=threading.current_thread().name)
        try:
            ok = True
            try:
                item = next(walk.pages, None)
                if item is not None:
                    if not self._post(results, ("file", item, None)):
                        _remove(item)
                        return
                    self._post(results, ("next", walk, None))
                    return
            except _EndpointTruncated as truncated:
                if not self._post(results, ("truncated", truncated, None)):
                    return
            except _EndpointFailed as failed:
                if self._cancel.is_set():
                    return
                ok = False
                log.warning("api_endpoint_failed", endpoint=walk.endpoint, uri=failed.uri, error=str(failed.error))
                self._post(results, ("failed", FetchFailed(failed.name, failed.uri, str(failed.error)), failed.error))
            self._post(results, ("done", ok, None))
        except BaseException as exc:  # noqa: BLE001 - ApiAuthError, or a bug: the job fails rather than hangs
            self._post(results, ("fatal", exc, None))

    def _post(self, results: queue.Queue[tuple[str, Any, Any]], message: tuple[str, Any, Any]) -> bool:
        """Put ``message`` unless the fetch was cancelled meanwhile (the queue is bounded)."""
        while not self._cancel.is_set():
            try:
                results.put(message, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    # ------------------------------------------------------------------ one endpoint

    def _walk(self, endpoint: str, workdir: Path) -> Generator[Item, None, None]:
        """The pages of ``endpoint`` in order; raises _EndpointFailed (ApiAuthError passes through).

        A page over ``max_file_bytes`` is yielded as a rejected FetchFailed and ends the walk.
        Raises _EndpointTruncated, after the last page, when ``max_pages`` pages were read
        and the last of them still offers a next one.
        """
        paging = self.paging
        cursor = self.source.get("cursor")
        since = self._since(endpoint) if cursor else None
        query = {**self.source["query"], cursor["param"]: since} if cursor and since is not None else self.source["query"]
        first = endpoint_url(self.base_url, endpoint, query)
        url = first
        newest: Any = MISSING
        if paging.type == "page":
            params: dict[str, Any] = {str(paging.param): paging.start}
            if paging.size_param:
                params[paging.size_param] = paging.size
            url = with_params(first, params)
        seen = {url}
        for number in range(1, paging.max_pages + 1):
            if self._cancel.is_set() or self.ctx.stop.is_set():
                return
            name = page_name(endpoint, number, since)
            # Only an unpaginated endpoint may be asked conditionally: see the module docstring.
            previous = self.ctx.previous.get(public_url(url)) if paging.type == "none" else None
            try:
                got = self._client.get_page(url, name, workdir, previous)
            except ApiAuthError:
                raise
            except FileTooLarge as exc:
                log.warning("api_page_rejected", endpoint=endpoint, uri=public_url(url), reason=str(exc))
                yield FetchFailed(name, public_url(url), str(exc), status="rejected")
                return
            except DiskFullError as exc:  # the page is failed; the pages after it cannot be reached
                yield FetchFailed(name, public_url(url), str(exc))
                return
            except ApiSourceError as exc:
                raise _EndpointFailed(name, public_url(url), exc) from exc
            if isinstance(got, Unchanged):
                yield got
                return
            file, meta = got
            keep, following = self._after_page(file, meta, first, url, number)
            if keep and cursor:
                newest = newest_value(file.path, self.source["records_path"], cursor["field"], newest)
            if keep:
                yield file
            else:
                file.path.unlink(missing_ok=True)
            if following is None:
                log.debug("api_endpoint_done", endpoint=endpoint, pages=number if keep else number - 1)
                if cursor and newest is not MISSING:
                    self.ctx.advance_cursor(endpoint, newest)
                    log.info("api_cursor_advanced", endpoint=endpoint, since=since, newest=newest)
                return
            if not same_origin(following, self.base_url):
                error = ApiSourceError(f"next page {public_url(following)} is outside {public_url(self.base_url)}; "
                                       "not followed", url=public_url(following), status=None)
                raise _EndpointFailed(page_name(endpoint, number + 1), public_url(following), error)
            if following in seen:
                log.warning("api_pagination_loop", endpoint=endpoint, page=number, next=public_url(following))
                return
            seen.add(following)
            url = following
        log.warning("api_max_pages_reached", endpoint=endpoint, max_pages=paging.max_pages, next=public_url(url))
        raise _EndpointTruncated(endpoint, public_url(url))

    def _since(self, endpoint: str) -> Any:
        """The watermark sent to ``endpoint``: kept from the last successful job, else ``initial``."""
        kept = self.ctx.cursors.get(endpoint)
        return kept if kept is not None else self.source["cursor"].get("initial")

    def _after_page(self, file: FetchedFile, meta: PageMeta, first: str, url: str,
                    number: int) -> tuple[bool, str | None]:
        """(keep page ``number`` read from ``url``, URL of the next page or None)."""
        kind = self.paging.type
        if kind == "none":
            return True, None
        if kind == "link_header":
            return True, resolve_next_link(meta.links, meta.url)
        try:
            document = json.loads(file.path.read_bytes().decode("utf-8-sig"))
        except (ValueError, RecursionError):
            log.warning("api_page_not_json", uri=file.source_uri, paginate=kind)
            return True, None  # kept: validation says what is wrong with it
        if kind == "page":
            if is_empty_page(document, self.source.get("records_path")):
                return False, None
            return True, with_params(url, {str(self.paging.param): self.paging.start + number})
        cursor = next_cursor(document, self.paging)
        return True, (with_params(first, {str(self.paging.param): cursor}) if cursor is not None else None)

    # ------------------------------------------------------------------ validate, close

    def validate(self, file: FetchedFile) -> list[Problem] | None:
        """With ``records_path`` and a JSON Schema: each record of the page on its own
        (locations ``records[3]: $.temp``). Otherwise the service's ``validate`` section."""
        records_path = self.source.get("records_path")
        checker = getattr(self.ctx.validators, "json", None)
        if not records_path or checker is None or not file.name.endswith(".json"):
            return super().validate(file)
        return record_problems(checker, file.path, records_path)

    def close(self) -> None:
        self._cancel.set()


def _remove(item: Item) -> None:
    """Delete the local file of a page that will not be yielded."""
    if isinstance(item, FetchedFile):
        item.path.unlink(missing_ok=True)


def _discard(results: queue.Queue[tuple[str, Any, Any]]) -> None:
    """Remove the files of pages fetched but never yielded."""
    while True:
        try:
            kind, payload, _ = results.get_nowait()
        except queue.Empty:
            return
        if kind == "file":
            _remove(payload)
