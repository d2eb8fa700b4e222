"""A throwaway PostgreSQL cluster on 127.0.0.1 for the tests: Debian's server binaries, run as
the ``postgres`` system user (initdb refuses root), password authentication over TCP.

``.ci/run`` installs the ``postgresql`` package when its binaries are missing. Without them,
:func:`postgres_or_skip` fails under CI (``CI`` set) and skips elsewhere.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["PG_PASSWORD", "PG_USER", "find_bin_dir", "postgres_cluster"]

PG_USER = "module"
PG_PASSWORD = "pg-test-pw-83b1f0"


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` holding ``initdb``, or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_postgres(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]


@contextmanager
def postgres_cluster(bin_dir: Path) -> Iterator[str]:
    """Start a fresh cluster; yield ``postgresql://module:<pw>@127.0.0.1:<port>/ingest``; stop and remove it."""
    root = Path(tempfile.mkdtemp(prefix="ms-pg-"))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    pwfile = root / "pw"
    pwfile.write_text(PG_PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        shutil.chown(pwfile, "postgres")
    port = _free_port()
    try:
        _as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", PG_USER, "--pwfile", str(pwfile),
                      "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"])
        _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "60",
                      "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
                            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200", "start"])
        _as_postgres([str(bin_dir / "createdb"), "-h", str(sockets), "-p", str(port), "-U", PG_USER, "ingest"])
        yield f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}/ingest"
    finally:
        if (data / "postmaster.pid").exists():
            try:
                _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
            except subprocess.CalledProcessError:
                time.sleep(0.5)
        shutil.rmtree(root, ignore_errors=True)
