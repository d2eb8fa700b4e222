"""A scriptable JSON API on 127.0.0.1 for tests and benchmarks (test-only code: not installed).

``http.server.ThreadingHTTPServer`` (HTTP/1.1, keep-alive) in a daemon thread, bound
to port 0 and ready when the constructor returns. Routes map an exact path to a
handler ``(ApiRequest) -> ApiReply``; every request is logged with its arrival time
and its count per exact target, and the server counts requests in flight::

    with ApiServer(latency_s=0.05) as api:
        api.route("/v1/items", lambda req: json_reply([{"id": 1}]))
        ... api.url ..., api.requests, api.peak_in_flight
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["ApiReply", "ApiRequest", "ApiServer", "json_reply"]


@dataclass(frozen=True)
class ApiRequest:
    """One request as the server saw it."""

    method: str
    target: str
    """Path and query as sent (``/v1/items?page=2``)."""
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    """Header names in lower case."""
    body: bytes
    at: float
    """``time.monotonic()`` when the request arrived."""
    count: int
    """1 for the first request to this exact target, 2 for the second, ..."""


@dataclass(frozen=True)
class ApiReply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)


def json_reply(document: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> ApiReply:
    """A JSON reply (``Content-Type: application/json``)."""
    return ApiReply(status, json.dumps(document).encode(), {"Content-Type": "application/json", **(headers or {})})


Handler = Callable[[ApiRequest], ApiReply]


class ApiServer:
    """The scriptable API server (see the module docstring)."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self.latency_s = latency_s
        self.routes: dict[str, Handler] = {}
        self.requests: list[ApiRequest] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.connections = 0
        """TCP connections accepted so far (keep-alive reuse keeps it low)."""
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        owner = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle's algorithm and the
            # client's delayed ACK add ~40 ms to every keep-alive reply.
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with owner._lock:
                    owner.connections += 1

            def _serve(self) -> None:
                owner._serve(self)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self.host, self.port = "127.0.0.1", int(self._server.server_address[1])
        self.url = f"http://{self.host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="api-server", daemon=True)
        self._thread.start()

    def route(self, path: str, handler: Handler) -> None:
        """Answer requests to ``path`` (exact, query ignored) with ``handler``."""
        self.routes[path] = handler

    def requests_to(self, path: str) -> list[ApiRequest]:
        """Logged requests whose path is ``path``, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _serve(self, http: BaseHTTPRequestHandler) -> None:
        length = int(http.headers.get("Content-Length") or 0)
        body = http.rfile.read(length) if length else b""
        parts = urlsplit(http.path)
        with self._lock:
            self._counts[http.path] += 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            request = ApiRequest(http.command, http.path, parts.path, dict(parse_qsl(parts.query)),
                                 {k.lower(): v for k, v in http.headers.items()}, body, time.monotonic(),
                                 self._counts[http.path])
            self.requests.append(request)
        try:
            if self.latency_s:
                time.sleep(self.latency_s)
            handler = self.routes.get(parts.path)
            try:
                reply = handler(request) if handler else json_reply({"error": "not found"}, 404)
            except Exception as exc:  # a broken test handler answers 599 rather than hanging the client
                reply = json_reply({"error": f"handler failed: {exc!r}"}, 599)
        finally:
            # Out of flight before the reply is sent: a client that has read it may send the
            # next request at once, and must not find this one still counted.
            with self._lock:
                self.in_flight -= 1
        http.send_response(reply.status)
        for name, value in reply.headers.items():
            http.send_header(name, value)
        http.send_header("Content-Length", str(len(reply.body)))
        http.end_headers()
        http.wfile.write(reply.body)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> ApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
