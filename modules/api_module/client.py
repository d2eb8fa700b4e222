"""One job's HTTP side of the ``api`` module: getting one page, however many tries it takes.

Config keys read: ``base_url`` and ``max_concurrency`` (the process-wide request limit),
``auth`` (through :mod:`.auth`), ``headers``, ``verify_tls``, ``max_response_bytes``,
``follow_redirects`` and ``allowed_hosts``;
service keys through ``ctx``: ``rate_limit`` (:meth:`JobContext.pace`), ``max_file_bytes``,
``timeout_s`` and ``retry``.

Each request, every retry included:

1. takes a slot of the process-wide semaphore of (``base_url``, ``max_concurrency``);
2. waits for the service's ``rate_limit`` (``ctx.pace()``), right before it is sent, so
   the gaps between request starts hold whatever the concurrency;
3. is sent from the calling thread's own pooled ``requests.Session``, redirects off;
4. streams its body into the page's hashing sink from byte 0.

A ``3xx`` fails the endpoint unless ``follow_redirects``; then it is followed by hand
(at most :data:`~modules.redirect_policy.MAX_REDIRECTS` hops) where the
:class:`~modules.redirect_policy.RedirectPolicy` allows: within ``allowed_hosts``, never
from https to http nor to a link-local or metadata address. ``auth`` and ``headers``
go only to ``base_url``'s origin (scheme, host, port); a request elsewhere carries
neither.

The page is given up (the caller records why) when the body is larger than the smaller
of ``max_response_bytes`` (an :class:`ApiSourceError`: the endpoint fails) and
``max_file_bytes`` (:class:`~common.file_sink.FileTooLarge`: the page is rejected).
A 401 is retried once with fresh OAuth2 credentials. Given a recorded ``etag`` or
``last_modified``, the request is conditional and a ``304`` means :class:`Unchanged`.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urljoin

import requests
import structlog
from requests.adapters import HTTPAdapter

from common.file_sink import FileSink, FileTooLarge
from common.interfaces.base_module import FetchedFile, JobContext, SourceConfig, Unchanged
from common.retry import RetryPolicy
from modules.api_module.auth import Auth, auth_for
from common.transfer_watchdog import shut_response, watch
from modules.api_module.exceptions import (
    ApiHttpError,
    ApiSourceError,
    ApiTransientError,
    ApiUnauthorizedError,
    error_for_status,
    translate_request_error,
)
from modules.api_module.pagination import public_url
from modules.http_headers import conditional_headers, version_identity
from modules.redirect_policy import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    AllowedHosts,
    OriginBoundSession,
    RedirectPolicy,
    origin_of,
)

__all__ = ["PageClient", "PageMeta", "service_limit"]

log = structlog.get_logger(__name__)

#: Bytes read from a response body at a time.
CHUNK_SIZE = 64 * 1024
USER_AGENT = "module_system-api/1"

_limits: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_limits_lock = threading.Lock()


def service_limit(base_url: str, max_concurrency: int) -> threading.BoundedSemaphore:
    """The process-wide semaphore bounding requests in flight to ``base_url``."""
    key = (base_url.rstrip("/"), max_concurrency)
    with _limits_lock:
        return _limits.setdefault(key, threading.BoundedSemaphore(max_concurrency))


def _reset_limits_after_fork() -> None:
    global _limits_lock
    _limits.clear()
    _limits_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_limits_after_fork)


@dataclasses.dataclass(frozen=True)
class PageMeta:
    """What the next-page logic may need of a reply besides its body."""

    url: str
    """The URL that answered (after redirects): relative links resolve against it."""
    links: Mapping[str, Mapping[str, str]]
    identity: Mapping[str, str]
    unchanged: bool = False
    """A 304 to a conditional request: nothing was written."""


class PageClient:
    """Gets pages for one job; thread-safe (one session per calling thread)."""

    def __init__(self, source: SourceConfig, ctx: JobContext, retry: RetryPolicy) -> None:
        self.source = source
        self.ctx = ctx
        self._retry = retry
        self._limit = service_limit(source["base_url"], source["max_concurrency"])
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._policy = redirect_policy(source)
        self._headers = dict(source["headers"])
        self._auth: Auth = auth_for(source["auth"], self.session, retry, ctx.timeout_s, pace=ctx.pace,
                                    headers_for=self._headers_for)

    def get_page(self, url: str, name: str, workdir: Path,
                 previous: Mapping[str, str] | None = None) -> tuple[FetchedFile, PageMeta] | Unchanged:
        """The page at ``url`` streamed into ``workdir/name``, or :class:`Unchanged` after a 304.

        ``previous``: the identity the last manifest recorded (its ``etag`` / ``last_modified``
        make the request conditional); None or empty: an ordinary GET.
        Raises ApiSourceError (after retries) or FileTooLarge (over ``max_file_bytes``).
        """
        public = public_url(url)
        conditional = conditional_headers(previous)
        with self.ctx.new_file(workdir, name, public) as sink:
            refreshed = False
            while True:
                headers, marker = self._auth.headers()
                try:
                    meta = self._retry.call(self._attempt, url, headers, conditional, sink, what=f"GET {public}")
                    break
                except ApiUnauthorizedError:
                    if refreshed or not self._auth.refreshable:
                        raise
                    refreshed = True
                    self._auth.invalidate(marker)
            if meta.unchanged:
                sink.abort()
                log.debug("api_page_unchanged", uri=public, name=sink.name)
                return Unchanged(sink.name, public, {**dict(previous or {}), **meta.identity})
            sink.identity = dict(meta.identity)
            fetched = sink.finish()
        log.debug("api_page_fetched", uri=public, name=fetched.name, bytes=fetched.size)
        return fetched, meta

    def _attempt(self, url: str, credentials: Mapping[str, str], conditional: Mapping[str, str],
                 sink: FileSink) -> PageMeta:
        """One GET from byte 0, redirects followed by hand where the policy allows; each
        request holds a slot of the service's concurrency limit."""
        sink.reset()
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            meta = self._request(current, credentials, conditional, sink)
            if isinstance(meta, PageMeta):
                return meta
            current = meta
        raise ApiHttpError(f"GET {public_url(url)}: more than {MAX_REDIRECTS} redirects",
                           url=public_url(url), status=None)

    def _request(self, url: str, credentials: Mapping[str, str], conditional: Mapping[str, str],
                 sink: FileSink) -> PageMeta | str:
        """One GET of ``url``: the page, or the URL a redirect that may be followed points to."""
        public = public_url(url)
        headers = {**self._headers_for(url), **(credentials if self._policy.sends_credentials(url) else {}),
                   **conditional}
        with self._limit:
            self.ctx.pace()
            try:
                response = self.session().get(url, headers=headers, timeout=self.ctx.timeout_s, stream=True,
                                              allow_redirects=False)
            except requests.RequestException as exc:
                raise translate_request_error(exc, public) from exc
            with response, watch(f"GET {public}", self.ctx.stop, self.ctx.timeout_s,
                                 cut=lambda: shut_response(response),
                                 stalled=lambda msg: ApiTransientError(msg, url=public, status=None)) as transfer:
                if response.status_code in REDIRECT_STATUSES and response.headers.get("Location"):
                    return self._redirect_target(url, response.status_code, response.headers["Location"])
                identity = version_identity(response.headers)
                if response.status_code == 304 and conditional:
                    return PageMeta(url=url, links={}, identity=identity, unchanged=True)
                if not 200 <= response.status_code < 300:
                    raise error_for_status(response.status_code, public, _head(response), response.headers)
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit():
                    self._check_size(int(declared), public, "declared")
                try:
                    for chunk in response.iter_content(CHUNK_SIZE):
                        transfer.arrived(len(chunk))
                        self._check_size(sink.size + len(chunk), public, "read")
                        sink.write(chunk)
                except requests.RequestException as exc:
                    raise translate_request_error(exc, public) from exc
                return PageMeta(url=url, links=response.links, identity=identity)

    def _redirect_target(self, url: str, status: int, location: str) -> str:
        """The absolute URL to follow; ApiHttpError (the endpoint fails) when the policy refuses it."""
        target = urljoin(url, location.strip())
        refusal = self._policy.refusal(url, target)
        if refusal is not None:
            raise ApiHttpError(f"GET {public_url(url)}: HTTP {status} redirect to {public_url(target)} "
                               f"not followed: {refusal}", url=public_url(url), status=status)
        log.debug("api_redirect", uri=public_url(url), location=public_url(target), status=status)
        return target

    def _headers_for(self, url: str) -> dict[str, str]:
        """The source's ``headers`` when ``url`` is on base_url's origin, else none."""
        return dict(self._headers) if self._policy.sends_credentials(url) else {}

    def _check_size(self, size: int, url: str, how: str) -> None:
        """Raise when ``size`` bytes are over the smaller of the two limits, with that limit's consequence."""
        page_limit: int = self.source["max_response_bytes"]
        file_limit = self.ctx.max_file_bytes
        if size > file_limit and file_limit <= page_limit:
            raise FileTooLarge(f"GET {url}: {size} bytes {how}, over max_file_bytes ({file_limit})",
                               uri=url, max_bytes=file_limit)
        if size > page_limit:
            raise ApiSourceError(f"GET {url}: the response is larger than max_response_bytes ({page_limit})",
                                 url=url, status=None)

    def session(self) -> requests.Session:
        """The calling thread's pooled session (one per worker thread of this job)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = OriginBoundSession()  # a cookie goes back only to the origin that set it
            adapter = HTTPAdapter(pool_maxsize=self.source["max_concurrency"], max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            session.verify = self.source["verify_tls"]
            # The source's headers are added per request (only to base_url's origin), never here.
            session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
            with self._sessions_lock:
                self._sessions.append(session)
            self._local.session = session
        return session

    def close(self) -> None:
        """Close every session this job opened."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


def _head(response: requests.Response) -> bytes:
    """The first bytes of an error reply's body, for the message; nothing if it cannot be read."""
    try:
        return next(response.iter_content(1024), b"")
    except Exception:  # noqa: BLE001 - the status is the error; a body that cannot be read adds nothing
        return b""


def redirect_policy(source: SourceConfig) -> RedirectPolicy:
    """The redirect and credential rules of an ``api`` source: credentials bound to base_url's
    origin, redirects (when ``follow_redirects``) within ``allowed_hosts`` (default: that origin)."""
    base_url: str = source["base_url"]
    entries = source["allowed_hosts"]
    if entries is None:
        origin = origin_of(base_url)
        entries = [] if origin is None else [str(origin).split("://", 1)[1]]
    return RedirectPolicy(AllowedHosts(entries, [base_url]), [base_url], follow=source["follow_redirects"])
