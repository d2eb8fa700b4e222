"""A plain HTTP file server on 127.0.0.1 for the ``http`` source's tests, with counters.

Serves ``files`` (path -> bytes) with ``ETag``, ``Last-Modified``, ``Content-Length``, ``HEAD``,
``Range`` (``206``), ``If-Range``, conditional ``GET`` (``304``), and an autoindex page for every
folder (``/`` and ``/sub/``: links to its files and sub-folders, plus the noise real autoindex
pages carry: ``../``, sort links). Knobs, set by a test at any time:

* ``cut_once``: path -> bytes after which the first GET of that path drops the connection;
* ``no_head``: answer 405 to every HEAD; ``no_ranges``: ignore Range (answer 200);
* ``disposition``: path -> a Content-Disposition value;
* ``auth``: a header value every request must carry in ``Authorization`` (else 401).

Counters: ``gets``/``heads`` (path -> count), ``ranges`` (the Range headers seen),
``bytes_sent`` (body bytes of GETs), ``requests`` (method, path, headers) in order.
"""

from __future__ import annotations

import email.utils
import hashlib
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import quote, unquote, urlsplit

__all__ = ["HttpFileServer"]


class HttpFileServer:
    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self.mtimes: dict[str, float] = {}
        self.cut_once: dict[str, int] = {}
        self.disposition: dict[str, str] = {}
        self.no_head = False
        self.no_ranges = False
        self.auth: str | None = None
        self.gets: Counter[str] = Counter()
        self.heads: Counter[str] = Counter()
        self.ranges: list[str] = []
        self.bytes_sent = 0
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def put(self, path: str, data: bytes, mtime: float | None = None) -> None:
        self.files[path] = data
        self.mtimes[path] = mtime if mtime is not None else time.time() - 3600

    def __enter__(self) -> Self:
        for path in self.files:
            self.mtimes.setdefault(path, time.time() - 3600)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def etag(self, path: str) -> str:
        return '"' + hashlib.sha256(self.files[path]).hexdigest()[:16] + '"'

    def index(self, folder: str) -> bytes | None:
        """The autoindex page of ``folder`` (``/`` or ``/sub/``), or None if no file is under it."""
        children: set[str] = set()
        base = folder.lstrip("/")
        for path in self.files:
            if path.startswith(base):
                rest = path[len(base):]
                children.add(rest.split("/", 1)[0] + "/" if "/" in rest else rest)
        if not children:
            return None
        rows = "".join(f'<tr><td><a href="{quote(c)}">{c}</a></td></tr>' for c in sorted(children))
        return (f'<html><head><title>Index of {folder}</title></head><body><h1>Index of {folder}</h1>'
                f'<table><tr><th><a href="?C=N;O=D">Name</a></th></tr>'
                f'<tr><td><a href="../">Parent Directory</a></td></tr>{rows}'
                f'<tr><td><a href="http://elsewhere.invalid/x.csv">elsewhere</a></td></tr></table></body></html>'
                ).encode()


def _handler(server: HttpFileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _answer(self, head: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            with server.lock:
                server.requests.append(("HEAD" if head else "GET", path, dict(self.headers.items())))
                (server.heads if head else server.gets)[path] += 1
            if server.auth is not None and self.headers.get("Authorization") != server.auth:
                return self._empty(401)
            if head and server.no_head:
                return self._empty(405)
            if path.endswith("/"):
                page = server.index(path)
                if page is None:
                    return self._empty(404)
                return self._send(200, page, {"Content-Type": "text/html"}, head)
            data = server.files.get(path.lstrip("/")) if path.lstrip("/") in server.files else None
            if data is None:
                return self._empty(404)
            key = path.lstrip("/")
            etag = server.etag(key)
            modified = email.utils.formatdate(server.mtimes.get(key, time.time()), usegmt=True)
            headers = {"ETag": etag, "Last-Modified": modified, "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            if key in server.disposition:
                headers["Content-Disposition"] = server.disposition[key]
            if not head and self.headers.get("If-None-Match") == etag:
                return self._empty(304, {"ETag": etag})
            wanted = self.headers.get("Range")
            if wanted and not head and not server.no_ranges:
                server.ranges.append(wanted)
                if_range = self.headers.get("If-Range")
                if if_range is None or if_range in (etag, modified):
                    start = int(wanted.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        return self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
                    headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                    return self._send(206, data[start:], headers, head, key)
            return self._send(200, data, headers, head, key)

        def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _send(self, status: int, body: bytes, headers: dict[str, str], head: bool, key: str = "") -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if head:
                return
            with server.lock:
                cut = server.cut_once.pop(key, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                with server.lock:
                    server.bytes_sent += cut
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)
            with server.lock:
                server.bytes_sent += len(body)

    return Handler
