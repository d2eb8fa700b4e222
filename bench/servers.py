"""The benchmark's servers, each in a process of its own, apart from the measured clients.

    python -m bench.servers s3                 # moto ThreadedMotoServer on 127.0.0.1
    python -m bench.servers ftp --root DIR     # pyftpdlib serving DIR
    python -m bench.servers web --pages 2000 --big-mb 10   # the web row's site (bench.web_bench)
    python -m bench.servers api --latency 0.02 --endpoints 100 --pages 20   # the api row's API
    python -m bench.servers postgres           # a throwaway PostgreSQL cluster (the sql row)

Each prints one JSON line (its address) on stdout once it listens, then serves until its
stdin closes (the parent exits or closes the pipe) or it gets SIGTERM. S3 and FTP are the
same classes as the test suite (:mod:`module_system.testing`), so the numbers describe the
servers the tests use; the API is :class:`tests.servers.api_server.ApiServer`, the web
site a ``ThreadingHTTPServer`` with ``TCP_NODELAY`` (:mod:`bench.web_bench`).
:class:`ServerProcess` starts one from the parent and reads its CPU time from ``/proc``
so that a run can tell how much of the machine the server took.

The S3 server also records when each ``PUT`` to an object key was answered
(``time.monotonic()`` in the server process, with the key): ``GET /__bench/puts`` returns
them as JSON and ``POST /__bench/puts`` clears them. The scale row reads its files' landing
times from there (moto's own ``LastModified`` has whole seconds only); the cost is one
list append per request.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from typing_extensions import Self

REPO = Path(__file__).resolve().parents[1]


class ServerProcess:
    """One ``python -m bench.servers KIND`` child; ``info`` is the JSON line it printed."""

    def __init__(self, kind: str, *args: str) -> None:
        self.kind = kind
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.servers", kind, *args], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench server {kind!r} did not start (exit code {self.proc.wait()})")
        self.info: dict[str, Any] = json.loads(line)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (Linux ``/proc``)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def rss_mb(self) -> float:
        """Resident memory of the server now, in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PutTimes:
    """WSGI middleware of the S3 server: when each object PUT was answered (see the module docstring)."""

    PATH = "/__bench/puts"

    def __init__(self, app: Any) -> None:
        self.app = app
        self.times: list[tuple[float, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
        if path == self.PATH:
            if method == "POST":
                self.times = []
            body = json.dumps(self.times if method == "GET" else []).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        answer = self.app(environ, start_response)
        if method == "PUT" and path.count("/") >= 2 and "uploadId" not in environ.get("QUERY_STRING", ""):
            self.times.append((time.monotonic(), path))  # list.append is atomic: no lock needed
        return answer


class _Postgres:
    """A throwaway cluster (``tests/servers/postgres.py``), stopped with :meth:`stop`."""

    def __init__(self) -> None:
        from tests.servers.postgres import find_bin_dir, postgres_cluster

        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise SystemExit("PostgreSQL's server binaries are missing (apt-get install postgresql)")
        self._cluster = postgres_cluster(bin_dir)
        self.url = self._cluster.__enter__()

    def stop(self) -> None:
        self._cluster.__exit__(None, None, None)


def _serve(kind: str, args: argparse.Namespace) -> None:
    from module_system.testing import FtpServer, S3Server

    server: Any
    if kind == "s3":
        server = S3Server()
        wsgi = server._server._server  # moto's werkzeug server: its handler calls self.server.app per request
        wsgi.app = PutTimes(wsgi.app)
        info: dict[str, Any] = {"url": server.url}
    elif kind == "ftp":
        assert args.root is not None, "ftp needs --root"
        server = FtpServer(args.root, max_cons=512)
        info = {"host": server.host, "port": server.port, "user": server.user, "password": server.password}
    elif kind == "web":
        from bench.web_bench import SiteServer

        server = SiteServer(args.pages, args.big_mb)
        info = {"url": server.url}
    elif kind == "postgres":
        server = _Postgres()
        info = {"url": server.url}
    else:
        from bench.api_bench import start_api

        server = start_api(args.latency, args.pages)
        info = {"url": server.url}
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(json.dumps(info), flush=True)
    def watch_stdin() -> None:  # the parent closed the pipe or exited
        sys.stdin.read()
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    done.wait()
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve S3 (moto), FTP (pyftpdlib), the web site or the API "
                                                 "for the benchmark.")
    parser.add_argument("kind", choices=["s3", "ftp", "web", "api", "postgres"])
    parser.add_argument("--root", help="folder the FTP server serves")
    parser.add_argument("--pages", type=int, default=2000, help="web: pages of the site; api: pages per endpoint")
    parser.add_argument("--big-mb", type=float, default=10.0, help="web: size of /big.html in MB")
    parser.add_argument("--latency", type=float, default=0.02, help="api: seconds the server sleeps per request")
    args = parser.parse_args()
    _serve(args.kind, args)


if __name__ == "__main__":
    main()
