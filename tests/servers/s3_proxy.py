"""A recording, fault-injecting HTTP proxy for S3 tests: put it between a client and moto.

    with S3Server() as s3, S3Proxy(s3.url) as proxy:
        proxy.fault = every_nth(5, "503")          # one request in five answers 503 SlowDown
        proxy.fault = fraction(0.2, ("503", "reset"))  # or about one in five, at random (seeded)
        client = s3_client(proxy.url)              # the client talks to the proxy
        ...
        [r.part_number for r in proxy.requests if r.operation == "UploadPart"]

Every request (any method) is forwarded to ``target`` with the same path, query and
headers (``Host`` included, so the client's signature still covers what the server
sees; moto does not check signatures anyway). Bodies are streamed in 1 MiB blocks both
ways; only a chunked *request* body is read whole before it is forwarded. Keep-alive
is supported on both sides: one upstream connection per client connection.

``fault(request)`` is asked before each request is forwarded and may answer:

``None``
    forward it;
``"503"``
    answer ``503 SlowDown`` with S3's XML error body, without forwarding;
``"reset"``
    read the request, do not forward it, reset the connection (RST, ``SO_LINGER`` 0);
``"reset_after"``
    forward it, let the server act on it, then reset instead of relaying the answer
    (the client cannot know whether the request took effect);
``"drip"``
    forward it, relay the status and headers, then the body one byte every ``drip_s``
    seconds until the client goes away (a server too slow to finish, too fast to time out);
``"hang"``
    read the request, do not forward it, never answer (until the proxy stops).

``requests`` lists each request in arrival order (:class:`ProxyRequest`: method, path,
query, then the status relayed and whether the client received it); ``injected`` counts
the faults by kind. Binds 127.0.0.1 on port 0; ready when the constructor returns.
"""

from __future__ import annotations

import http.client
import itertools
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from module_system.testing import LocalHttpServer

__all__ = ["FaultRule", "ProxyRequest", "S3Proxy", "every_nth", "fraction"]

BLOCK = 1 << 20
#: Headers that describe one hop, never forwarded as they are.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
                        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade", "expect"})
SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message><RequestId>s3proxy</RequestId></Error>")


@dataclass
class ProxyRequest:
    """One request as the proxy saw it."""

    method: str
    path: str
    """URL path, still percent-encoded."""
    query: str
    headers: dict[str, str] = field(default_factory=dict)
    """The request's headers, names in lower case."""
    fault: str | None = None
    """The fault injected into this request, if any."""
    status: int | None = None
    """The upstream status (or 503 for an injected SlowDown); None if nothing came back."""
    delivered: bool = False
    """Whether the client received the answer."""

    @property
    def user_agent(self) -> str | None:
        return self.headers.get("user-agent")

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.query, keep_blank_values=True).items()}

    @property
    def key(self) -> str:
        """The object key (path-style addressing: ``/bucket/key``), or ``""`` for a bucket."""
        parts = self.path.lstrip("/").split("/", 1)
        return unquote(parts[1]) if len(parts) == 2 else ""

    @property
    def part_number(self) -> int | None:
        number = self.params.get("partNumber")
        return int(number) if number else None

    @property
    def ok(self) -> bool:
        """A success the client saw."""
        return self.delivered and self.status is not None and 200 <= self.status < 300

    @property
    def operation(self) -> str:
        """The S3 operation, by method and query (enough for tests)."""
        params, method = self.params, self.method
        if "uploadId" in params:
            by_method = {"PUT": "UploadPart", "POST": "CompleteMultipartUpload",
                         "DELETE": "AbortMultipartUpload", "GET": "ListParts"}
            return by_method.get(method, method)
        if "uploads" in params:
            return "CreateMultipartUpload" if method == "POST" else "ListMultipartUploads"
        if not self.key:
            return {"PUT": "CreateBucket", "GET": "ListObjects", "HEAD": "HeadBucket"}.get(method, method)
        if method == "PUT" and "x-amz-copy-source" in self.headers:
            return "CopyObject"
        return {"PUT": "PutObject", "GET": "GetObject", "HEAD": "HeadObject",
                "DELETE": "DeleteObject"}.get(method, method)


FaultRule = Callable[[ProxyRequest], "str | None"]


def every_nth(n: int, kinds: str | tuple[str, ...] = "503",
              operations: Collection[str] | None = None) -> FaultRule:
    """A rule faulting every ``n``-th request (of ``operations``, or of all), cycling ``kinds``."""
    cycle = itertools.cycle((kinds,) if isinstance(kinds, str) else kinds)
    lock = threading.Lock()
    seen = 0

    def rule(request: ProxyRequest) -> str | None:
        nonlocal seen
        if operations is not None and request.operation not in operations:
            return None
        with lock:
            seen += 1
            return next(cycle) if seen % n == 0 else None

    return rule


def fraction(share: float, kinds: str | tuple[str, ...] = "503", seed: int = 0,
             operations: Collection[str] | None = None) -> FaultRule:
    """A rule faulting about ``share`` of the requests (of ``operations``, or of all), cycling ``kinds``.

    The choice is pseudo-random from ``seed``, so the same sequence of requests meets the
    same faults; unlike :func:`every_nth` it cannot fall in step with a retry pattern.
    """
    cycle = itertools.cycle((kinds,) if isinstance(kinds, str) else kinds)
    rng = random.Random(seed)
    lock = threading.Lock()

    def rule(request: ProxyRequest) -> str | None:
        if operations is not None and request.operation not in operations:
            return None
        with lock:
            return next(cycle) if rng.random() < share else None

    return rule


class _ClientGone(Exception):
    """The client closed its connection in the middle of a request body."""


class S3Proxy:
    """A threaded HTTP proxy to ``target`` that records requests and injects faults."""

    def __init__(self, target: str, fault: FaultRule | None = None) -> None:
        parts = urlsplit(target)
        self.target_host, self.target_port = parts.hostname or "127.0.0.1", parts.port or 80
        self.fault = fault
        self.drip_s = 0.2
        self.closing = threading.Event()
        self.requests: list[ProxyRequest] = []
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()
        handler = type("Handler", (_Handler,), {"proxy": self})
        self._listener = LocalHttpServer(handler, name="s3-proxy")
        self.port, self.url = self._listener.port, self._listener.url

    def record(self, request: ProxyRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def decide(self, request: ProxyRequest) -> str | None:
        rule = self.fault
        kind = rule(request) if rule is not None else None
        if kind is not None:
            if kind not in ("503", "reset", "reset_after", "drip", "hang"):
                raise ValueError(f"unknown fault {kind!r}")
            request.fault = kind
            with self._lock:
                self.injected[kind] += 1
        return kind

    def of(self, operation: str, since: int = 0) -> list[ProxyRequest]:
        """The requests of one operation, from index ``since`` of :attr:`requests` on."""
        with self._lock:
            return [r for r in self.requests[since:] if r.operation == operation]

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.injected.clear()

    def stop(self) -> None:
        self.closing.set()
        self._listener.stop()

    def __enter__(self) -> S3Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    proxy: S3Proxy
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 120
    _upstream: http.client.HTTPConnection | None = None

    def do_GET(self) -> None:  # http.server's naming
        self._proxy()

    do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _proxy(self) -> None:
        split = urlsplit(self.path)
        request = ProxyRequest(self.command, split.path, split.query, {k.lower(): v for k, v in self.headers.items()})
        self.proxy.record(request)
        kind = self.proxy.decide(request)
        try:
            if kind == "hang":
                self._drain_body()
                self.proxy.closing.wait()
                self.close_connection = True
                return
            if kind in ("503", "reset"):
                self._drain_body()
                if kind == "reset":
                    self._reset()
                else:
                    self._slow_down(request)
                return
            response = self._forward()
            request.status = response.status
            if kind == "reset_after":
                response.read()
                self._reset()
                return
            self._dripping = kind == "drip"
            self._relay(response)
            request.delivered = True
        except _ClientGone:
            self._drop_upstream()
            self.close_connection = True
        except (OSError, http.client.HTTPException):
            # the upstream failed, or the client went away while we answered
            self._drop_upstream()
            self.close_connection = True

    # ------------------------------------------------------------------ request body

    def _body_blocks(self) -> Any:
        """The request body in blocks: Content-Length streamed, chunked read whole."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            yield self._read_chunked()
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            block = self.rfile.read(min(BLOCK, remaining))
            if not block:
                raise _ClientGone()
            remaining -= len(block)
            yield block

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise _ClientGone()
            size = int(line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return bytes(body)
            chunk = self.rfile.read(size + 2)
            if len(chunk) < size + 2:
                raise _ClientGone()
            body += chunk[:size]

    def _drain_body(self) -> None:
        for _ in self._body_blocks():
            pass

    # ------------------------------------------------------------------ forwarding

    def _forward(self) -> http.client.HTTPResponse:
        """Send the request upstream; a bodiless one is retried once on a stale keep-alive connection."""
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        bodiless = not chunked and int(self.headers.get("Content-Length") or 0) == 0
        reused = self._upstream is not None
        try:
            return self._send_upstream(chunked)
        except (OSError, http.client.HTTPException):
            if not (reused and bodiless):
                raise
            self._drop_upstream()
            return self._send_upstream(chunked)

    def _send_upstream(self, chunked: bool) -> http.client.HTTPResponse:
        if self._upstream is None:
            conn = http.client.HTTPConnection(self.proxy.target_host, self.proxy.target_port, timeout=120)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # headers and body go apart
            self._upstream = conn
        conn = self._upstream
        blocks = self._body_blocks()
        body = next(blocks, b"") if chunked else None
        conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in HOP_BY_HOP and not (chunked and name.lower() == "content-length"):
                conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        if body is not None:
            conn.send(body)
        else:
            for block in blocks:
                conn.send(block)
        return conn.getresponse()

    def _relay(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)
        length = response.getheader("Content-Length")
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        bodiless = self.command == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200
        chunked = not bodiless and length is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if not bodiless and getattr(self, "_dripping", False):
            self._drip(response, chunked)
        elif not bodiless:
            while block := response.read(BLOCK):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        else:
            response.read()
        self.wfile.flush()
        if response.will_close:
            self._drop_upstream()

    def _drip(self, response: http.client.HTTPResponse, chunked: bool) -> None:
        """The body one byte every ``drip_s`` seconds; ends when the client goes (OSError)."""
        body = response.read()
        for i in range(len(body)):
            byte = body[i:i + 1]
            self.wfile.write(b"1\r\n%s\r\n" % byte if chunked else byte)
            self.wfile.flush()
            threading.Event().wait(self.proxy.drip_s)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _slow_down(self, request: ProxyRequest) -> None:
        request.status = 503
        self.send_response_only(503, "Slow Down")
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(SLOW_DOWN)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(SLOW_DOWN)
        self.wfile.flush()
        request.delivered = True

    def _reset(self) -> None:
        """Close the client connection with a TCP RST: no answer, no orderly FIN."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.rfile.close()  # the makefile() reference would keep the descriptor open
        sock.close()

    def _drop_upstream(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
            self._upstream = None

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self._drop_upstream()
