"""The benchmark's servers, each in a process of its own, apart from the measured clients.

    python -m bench.servers s3                 # moto ThreadedMotoServer on 127.0.0.1
    python -m bench.servers ftp --root DIR     # pyftpdlib serving DIR

Each prints one JSON line (its address) on stdout once it listens, then serves until its
stdin closes (the parent exits or closes the pipe) or it gets SIGTERM. The same classes
as the test suite (:mod:`module_system.testing`), so the numbers describe the servers the
tests use. :class:`ServerProcess` starts one from the parent and reads its CPU time from
``/proc`` so that a run can tell how much of the machine the server took.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

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

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(kind: str, root: str | None) -> None:
    from module_system.testing import FtpServer, S3Server

    server: Any
    if kind == "s3":
        server = S3Server()
        info: dict[str, Any] = {"url": server.url}
    else:
        assert root is not None, "ftp needs --root"
        server = FtpServer(root, max_cons=512)
        info = {"host": server.host, "port": server.port, "user": server.user, "password": server.password}
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
    parser = argparse.ArgumentParser(description="Serve S3 (moto) or FTP (pyftpdlib) for the benchmark.")
    parser.add_argument("kind", choices=["s3", "ftp"])
    parser.add_argument("--root", help="folder the FTP server serves")
    args = parser.parse_args()
    _serve(args.kind, args.root)


if __name__ == "__main__":
    main()
