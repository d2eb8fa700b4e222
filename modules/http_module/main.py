"""The ``http`` source: files behind plain HTTP(S) URLs, listed by hand or linked from index pages.

Keys (``source`` of a ``type: http`` service; defaults in :attr:`HttpModule.source_schema`):

``urls``
    File URLs, fetched in the order given. The file's name is the server's
    ``Content-Disposition`` filename when the listing's ``HEAD`` gives one, else the last
    segment of the URL path (percent escapes decoded).
``index``
    Index pages (an Apache or nginx autoindex, a vendor's download page): every ``<a href>`` of
    the page that points below the page's folder is a file (``../``, other hosts, sort links
    with a query are not); its name is its path relative to that folder. With ``recursive``,
    links ending in ``/`` are index pages of sub-folders, walked up to ``max_depth`` levels.
``head``
    Send a ``HEAD`` for each file while listing (default true, as rclone's http backend): the
    size (for ``max_file_bytes``, ``min_size``/``max_size`` and ``plan``), the time
    (``newer_than``/``older_than``) and the version marks (``ETag``, ``Last-Modified``, size) that
    let ``incremental: true`` skip an unchanged file without a ``GET``. A server that refuses
    ``HEAD`` (405, 501...) gets the ``GET`` alone. HEADs run ``transfers`` at once.
``headers``, ``user_agent``, ``verify_tls``, ``allowed_hosts``
    As for ``web``: the secret ``headers`` go only to the origins of ``urls`` and ``index``;
    redirects are followed by hand under :class:`~modules.redirect_policy.RedirectPolicy`
    (allowed hosts only, never https -> http, never to a metadata address).

Any content type is a file (this is not a crawler: nothing is parsed but index pages).

Incremental and resume: with ``head: false`` (or a server without ``HEAD``) and
``incremental: true``, the download is a conditional ``GET`` (``If-None-Match`` /
``If-Modified-Since`` from the last run's marks): a ``304`` records the file unchanged
(:class:`~common.interfaces.file_source.NotModified`). A download cut part-way is retried from
where it stopped with ``Range: bytes=N-`` (and ``If-Range`` with a strong ETag or the
Last-Modified date, so a file that changed meanwhile is sent whole); a server that ignores
ranges answers ``200`` and the file starts over.

Errors: 401/403 on a file fail the source (every file would fail alike); 404/410 fail one file
(a linked file gone since its index was read is skipped as vanished); 408/429/5xx and cut
connections are retried (``Retry-After`` honoured). An index page that cannot be read fails
the source.
"""

from __future__ import annotations

import datetime as dt
import email.message
import email.utils
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import PurePosixPath
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urljoin, urlsplit

import requests
import structlog

from module_system import (
    Entry,
    FileSink,
    FileSource,
    FileVanished,
    JobContext,
    NotModified,
    SourceConfig,
    Transfer,
    host_of,
    reveal,
    shut_response,
    watch,
)
from modules.http_headers import conditional_headers, version_identity
from modules.http_module.index import folder_of, index_links, relative_name
from modules.http_sessions import new_session, tls_verify
from modules.redirect_policy import (
    MAX_REDIRECTS,
    REDIRECT_STATUSES,
    AllowedHosts,
    RedirectPolicy,
)
from modules.web_module.exceptions import (
    WebHttpError,
    WebSourceError,
    WebTransientError,
    raise_for_status,
    translate_request_error,
)
from modules.web_module.pages import default_allowed_hosts, normalize_url

__all__ = ["HttpAuthRefused", "HttpModule"]

log = structlog.get_logger(__name__)
T = TypeVar("T")

CHUNK_SIZE = 256 * 1024
_URL = {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+"}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class HttpAuthRefused(WebHttpError):
    """401 or 403 on a file: the credentials (``headers``) are refused; fails the source."""


class HttpModule(FileSource):
    source_schema: ClassVar[Mapping[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "anyOf": [{"required": ["urls"]}, {"required": ["index"]}],
        "properties": {
            "urls": {"type": "array", "items": _URL, "minItems": 1,
                     "description": "File URLs (http or https), in order."},
            "index": {"type": "array", "items": _URL, "minItems": 1,
                      "description": "Index pages whose links below the page's folder are the files."},
            "recursive": {"type": "boolean", "default": False,
                          "description": "Walk the sub-folders linked from index pages (links ending in /)."},
            "max_depth": {"type": "integer", "minimum": 0, "default": 10,
                          "description": "Most sub-folder levels below an index page walked with recursive."},
            "head": {"type": "boolean", "default": True,
                     "description": "HEAD each file while listing, for its size, time, name and version marks."},
            "max_index_bytes": {"type": "integer", "minimum": 1, "default": 50 * 1024 * 1024,
                                "description": "Larger index pages fail the source (read while streaming)."},
            "allowed_hosts": {"type": ["array", "null"], "default": None,
                              "items": {"type": "string", "minLength": 1},
                              "description": "Hosts redirects may lead to, as for web; null: the hosts and ports "
                                             "of urls and index."},
            "user_agent": {"type": "string", "minLength": 1, "default": "module_system/0.1",
                           "description": "User-Agent header."},
            "headers": {"type": "object", "default": {},
                        "additionalProperties": {"type": "string", "x-secret": True},
                        "description": "Extra request headers (values are secret: never logged, sent only to "
                                       "the origins of urls and index)."},
            "verify_tls": {"type": "boolean", "default": True,
                           "description": "Verify https certificates; false only for trusted test servers."},
        },
    }
    default_max_connections: ClassVar[int | None] = 4
    default_transfers: ClassVar[int] = 4
    resumable: ClassVar[bool] = True
    fatal_errors: ClassVar[tuple[type[BaseException], ...]] = (HttpAuthRefused,)

    @classmethod
    def hosts(cls, source: SourceConfig) -> tuple[str, ...]:
        return tuple(dict.fromkeys(host_of(url) for url in [*source.get("urls", ()), *source.get("index", ())]))

    def __init__(self, source: SourceConfig, ctx: JobContext) -> None:
        super().__init__(source, ctx)
        configured = [*source.get("urls", ()), *source.get("index", ())]
        allowed = AllowedHosts(source["allowed_hosts"] or default_allowed_hosts(configured), configured)
        self._policy = RedirectPolicy(allowed, configured)
        self._secret_headers = {str(k): str(reveal(v)) for k, v in source["headers"].items()}
        self._verify = tls_verify(source["verify_tls"])

    def host_for(self, entry: Entry) -> str:
        return host_of(entry.source_uri)

    # ------------------------------------------------------------------ listing

    def list_entries(self) -> Iterator[Entry]:
        """``urls`` in order, then the files of each ``index`` page sorted by name; with ``head``,
        each with what its HEAD tells (``transfers`` HEADs at once, yielded in order)."""
        listed: list[tuple[str, str | None, bool]] = []  # (url, name or None: from the HEAD, linked)
        for url in self.source.get("urls", ()):
            listed.append((normalize_url(url) or url, None, False))
        for url in self.source.get("index", ()):
            listed.extend((link, name, True) for link, name in self._walk_index(normalize_url(url) or url))
        if not self.source["head"]:
            yield from (self._entry(url, name or _url_name(url), linked) for url, name, linked in listed)
            return
        with self.ctx.lanes() as lanes:
            window = 4 * lanes.width
            futures = [lanes.submit(self._headed, *item) for item in listed[:window]]
            for i in range(len(listed)):
                if self.ctx.stop.is_set():
                    return
                entry = futures[i].result()
                if i + window < len(listed):
                    futures.append(lanes.submit(self._headed, *listed[i + window]))
                yield entry

    def _walk_index(self, page: str) -> Iterator[tuple[str, str]]:
        """(file URL, name) of every file below the index ``page``, sorted by name; sub-folders
        walked breadth-first when ``recursive``."""
        root = folder_of(page)
        files: dict[str, str] = {}
        pending, seen = [(page, 0)], {page}
        while pending:
            current, depth = pending.pop(0)
            html = self.ctx.retry.call(self._read_index, current, what=f"GET {current}")
            for link in index_links(html, current, root):
                if not link.folder:
                    files.setdefault(relative_name(link.url, root), link.url)
                elif self.source["recursive"] and depth < self.source["max_depth"] and link.url not in seen:
                    seen.add(link.url)
                    pending.append((link.url, depth + 1))
        return iter(sorted((url, name) for name, url in files.items()))

    def _read_index(self, url: str) -> bytes:
        def take(response: requests.Response, transfer: Transfer, final: str) -> bytes:
            _raise_for(response, final)
            limit = self.source["max_index_bytes"]
            body = bytearray()
            for chunk in response.iter_content(CHUNK_SIZE):
                transfer.arrived(len(chunk))
                body += chunk
                if len(body) > limit:
                    raise WebSourceError(f"{final}: index page over max_index_bytes ({limit})", url=final)
            return bytes(body)

        return self._request("GET", url, {}, take, slotted=False)

    def _headed(self, url: str, name: str | None, linked: bool) -> Entry:
        """The entry of ``url`` with what a HEAD says (a refused HEAD: the entry without it)."""
        try:
            headers = self.ctx.retry.call(self._request, "HEAD", url, {}, _head_answer, slotted=False,
                                          what=f"HEAD {url}")
        except WebHttpError as exc:  # 405 Method Not Allowed, 403 on HEAD only (presigned URLs), 404...
            if exc.fields.get("status") == 401:
                raise HttpAuthRefused(str(exc), **exc.fields) from None
            log.info("http_head_refused", url=url, status=exc.fields.get("status"))
            return self._entry(url, name or _url_name(url), linked)
        if name is None:
            name = _disposition_name(headers.get("Content-Disposition")) or _url_name(url)
        identity = version_identity(headers)
        length = headers.get("Content-Length", "")
        size = int(length) if length.isdigit() and "Content-Encoding" not in headers else None
        if size is not None:
            identity["size"] = str(size)
        return self._entry(url, name, linked, size=size, identity=identity,
                           modified=_http_date(headers.get("Last-Modified")))

    @staticmethod
    def _entry(url: str, name: str, linked: bool, size: int | None = None,
               identity: Mapping[str, str] | None = None, modified: dt.datetime | None = None) -> Entry:
        return Entry(name, url, size=size, identity=identity or {}, handle=linked, modified=modified)

    # ------------------------------------------------------------------ one file

    def download(self, entry: Entry, sink: FileSink) -> Mapping[str, str]:
        """GET the file into ``sink``: from ``sink.size`` on with a Range after a cut, conditional
        on the last run's marks when the listing had none."""
        headers: dict[str, str] = {}
        if sink.size:
            headers["Range"] = f"bytes={sink.size}-"
            validator = _if_range(entry.identity)
            if validator:
                headers["If-Range"] = validator
        elif not entry.identity:
            headers.update(conditional_headers(self.ctx.previous.get(entry.source_uri)))
        return self._request("GET", entry.source_uri, headers,
                             functools.partial(self._take_file, entry, sink, headers), slotted=True)

    def _take_file(self, entry: Entry, sink: FileSink, sent: Mapping[str, str], response: requests.Response,
                   transfer: Transfer, final: str) -> dict[str, str]:
        status = response.status_code
        if status == 304 and ("If-None-Match" in sent or "If-Modified-Since" in sent):
            raise NotModified(f"{final}: not modified", identity=version_identity(response.headers))
        if status in (404, 410) and entry.handle:  # linked from an index read a moment ago
            raise FileVanished(f"{final}: HTTP {status} (gone since the index was read)")
        if status == 416 and sink.size:
            sink.reset()
            raise WebTransientError(f"{final}: range from {sink.size} refused (HTTP 416); starting over",
                                    url=final, retry_after=None)
        _raise_for(response, final)
        if status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if match is None or int(match.group(1)) != sink.size:
                sink.reset()
                raise WebTransientError(f"{final}: answered a range that does not continue the file; "
                                        "starting over", url=final, retry_after=None)
            log.info("http_resumed", url=final, offset=sink.size)
        elif sink.size:  # 200 to a Range: the server sends the whole file again
            sink.reset()
        for chunk in response.iter_content(CHUNK_SIZE):
            transfer.arrived(len(chunk))
            sink.write(chunk)
        marks = version_identity(response.headers)
        marks["size"] = str(sink.size)
        return marks

    # ------------------------------------------------------------------ requests

    def _request(self, method: str, url: str, headers: Mapping[str, str],
                 take: Callable[[requests.Response, Transfer, str], T], slotted: bool) -> T:
        """``method`` on ``url``, redirects followed by hand under the redirect policy; ``take``
        reads the final answer (with its URL). Each hop of a listing request holds a slot of its
        host; a download's hops run in the slot the template already holds (``slotted``)."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            if slotted:
                answer = self._send(method, current, headers, take)
            else:
                with self.ctx.slot(current):
                    answer = self._send(method, current, headers, take)
            if not isinstance(answer, _Redirect):
                return answer
            target = normalize_url(urljoin(current, answer.location))
            refusal = self._policy.refusal(current, target) if target is not None else "not an http(s) URL"
            if refusal is not None or target is None:
                raise WebSourceError(f"{current}: redirect to {answer.location} not followed: {refusal}",
                                     url=current)
            current = target
        raise WebSourceError(f"{url}: more than {MAX_REDIRECTS} redirects", url=url)

    def _send(self, method: str, url: str, headers: Mapping[str, str],
              take: Callable[[requests.Response, Transfer, str], T]) -> T | _Redirect:
        secret = self._secret_headers if self._policy.sends_credentials(url) else {}
        sent = {**secret, "User-Agent": self.source["user_agent"], "Accept-Encoding": "identity", **headers}
        with self.ctx.resources.pooled(("http", host_of(url)), functools.partial(new_session, url),
                                       keep_on_error=True) as session:
            try:
                response = session.request(method, url, headers=sent, allow_redirects=False, stream=True,
                                           timeout=(self.ctx.timeout_s, self.ctx.timeout_s), verify=self._verify)
            except requests.RequestException as exc:
                raise translate_request_error(exc, url) from exc
            try:
                if response.status_code in REDIRECT_STATUSES and response.headers.get("Location"):
                    return _Redirect(response.headers["Location"])
                with watch(f"{method} {url}", self.ctx.stop, self.ctx.timeout_s, cut=lambda: shut_response(response),
                           stalled=lambda msg: WebTransientError(msg, url=url, retry_after=None)) as transfer:
                    return take(response, transfer, url)
            except requests.RequestException as exc:
                raise translate_request_error(exc, url) from exc
            finally:
                response.close()


class _Redirect:
    __slots__ = ("location",)

    def __init__(self, location: str) -> None:
        self.location = location


def _raise_for(response: requests.Response, url: str) -> None:
    """The error of a failing answer: 401/403 refuse the credentials (fatal for a file, the
    source's failure for an index page), the rest as :func:`raise_for_status`."""
    status = response.status_code
    if status in (401, 403):
        raise HttpAuthRefused(f"{url}: HTTP {status} {response.reason or ''} (access refused; check "
                              "the source's headers)".rstrip(), url=url, status=status)
    raise_for_status(response, url)


def _head_answer(response: requests.Response, transfer: Transfer, final: str) -> requests.structures.CaseInsensitiveDict[str]:
    raise_for_status(response, final)
    return response.headers


def _url_name(url: str) -> str:
    """The last segment of the URL path, decoded; the host when the path has none."""
    parts = urlsplit(url)
    return unquote(parts.path.rstrip("/").rsplit("/", 1)[-1]) or parts.hostname or "index"


def _disposition_name(value: str | None) -> str | None:
    """The ``filename`` (or RFC 6266 ``filename*``) of a Content-Disposition, base name only."""
    if not value:
        return None
    message = email.message.Message()
    message["Content-Disposition"] = value
    name = message.get_filename()
    if not name:
        return None
    base = PurePosixPath(name.replace("\\", "/")).name
    return base if base not in ("", ".", "..") else None


def _http_date(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _if_range(identity: Mapping[str, str]) -> str | None:
    """The ``If-Range`` validator: a strong ETag, else the Last-Modified date (RFC 9110 13.1.5)."""
    etag = identity.get("etag", "")
    if etag and not etag.startswith("W/"):
        return etag
    return identity.get("last_modified") or None
