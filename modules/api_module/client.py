"""One job's HTTP side of the ``api`` module: getting one page, however many tries it takes.

Config keys read: ``base_url``, ``auth`` (through :mod:`.auth`), ``headers``, ``verify_tls``,
``max_response_bytes``, ``follow_redirects`` and ``allowed_hosts``; service keys through
``ctx``: ``max_file_bytes``, ``timeout_s`` and ``retry``, and, through :meth:`JobContext.slot`,
``limits.max_connections``, ``limits.delay_s`` and ``rate_limit``.

Each request, every retry and token request included:

1. holds a connection slot of its host (``ctx.slot(url)``): the run's one per-host limiter
   caps connections to the host across every job and lane, and spaces request starts by
   ``rate_limit`` and ``limits.delay_s``;
2. checks out the run's pooled ``requests.Session`` for the host
   (``ctx.resources.pooled``, :func:`~modules.http_sessions.new_session`), redirects off;
   the job's cookies (:class:`~modules.http_sessions.JobCookies`) go back only to the
   origin that set them;
3. streams its body into the page's hashing sink from byte 0.

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
import functools
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urljoin

import requests
import structlog

from module_system import (
    FetchedFile,
    FileSink,
    FileTooLarge,
    JobContext,
    RetryPolicy,
    SourceConfig,
    TransferStopped,
    Unchanged,
    host_of,
    shut_response,
    watch,
)
from modules.api_module.auth import Auth, TokenStore, auth_for
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
from modules.http_sessions import JobCookies, new_session, tls_verify
from modules.redirect_policy import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    AllowedHosts,
    RedirectPolicy,
    origin_of,
)

__all__ = ["PageClient", "PageMeta"]

log = structlog.get_logger(__name__)

#: Bytes read from a response body at a time.
CHUNK_SIZE = 64 * 1024
USER_AGENT = "module_system-api/1"

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
    """Gets pages for one job; thread-safe (the job's lanes share it)."""

    def __init__(self, source: SourceConfig, ctx: JobContext, retry: RetryPolicy,
                 halt: threading.Event | None = None) -> None:
        self.source = source
        self.ctx = ctx
        self._retry = retry
        self._halt = halt or threading.Event()
        self._policy = redirect_policy(source)
        self._headers = dict(source["headers"])
        self._verify = tls_verify(source["verify_tls"])
        self._cookies = JobCookies()
        self._auth: Auth = auth_for(source["auth"], self.connect, retry, ctx.timeout_s,
                                    stores=functools.partial(ctx.resources.shared, factory=TokenStore),
                                    headers_for=self._headers_for)

    @contextmanager
    def connect(self, url: str) -> Iterator[requests.Session]:
        """A connection slot of ``url``'s host and the run's pooled session for it, for one request.

        Raises TransferStopped when the run stops while waiting, or when the job's fetch has
        ended (``halt``) by the time the slot comes free: such a request is not sent."""
        with self.ctx.slot(url):
            if self._halt.is_set():
                raise TransferStopped(f"GET {public_url(url)}: the fetch has ended")
            # A session is only a connection pool (no cookies, no headers of its own): after an
            # error it is still fine, urllib3 drops a broken connection, so it goes back.
            with self.ctx.resources.pooled(("api", host_of(url)), functools.partial(new_session, url),
                                           keep_on_error=True) as session:
                yield session

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
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **self._headers_for(url),
                   **(credentials if self._policy.sends_credentials(url) else {}), **conditional}
        headers.update(self._cookies.header(url, headers))
        with self.connect(url) as session:
            try:
                response = session.send(_prepared(url, session, headers), timeout=self.ctx.timeout_s, stream=True,
                                        allow_redirects=False, verify=self._verify)
            except requests.RequestException as exc:
                raise translate_request_error(exc, public) from exc
            self._cookies.keep(response)
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

def _prepared(url: str, session: requests.Session, headers: Mapping[str, str]) -> requests.PreparedRequest:
    """The GET of ``url`` with the session's default headers under ``headers``: what
    ``session.get`` sends, without merging the session's cookies, auth and settings on every
    request (a pooled session has none: :func:`~modules.http_sessions.new_session`)."""
    request = requests.PreparedRequest()
    request.prepare(method="GET", url=url, headers={**session.headers, **headers})
    return request


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
