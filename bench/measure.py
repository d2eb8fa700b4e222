"""Measuring one client run: wall time, CPU time and peak RSS of a child process, the
servers' CPU time over the same interval, and a check of what landed in the bucket.

The child is started by :mod:`bench.spawner` (a small process of its own: a child started
straight from the benchmark would report the benchmark's own peak memory as its floor) and
waited for there with ``os.wait4``, which returns the resource usage of that one process:
``ru_maxrss`` is its own peak resident set (KiB on Linux), what ``tests/e2e/peak_rss.py``
reads from inside with ``getrusage(RUSAGE_SELF)``, without a wrapper in the measured
process, and the same way for Python, rclone and Scrapy. The floor is the spawner's own
~13 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from typing_extensions import Self

from bench.servers import ServerProcess

__all__ = ["ProcessResult", "Sample", "Servers", "landed", "machine_busy_seconds", "run_process", "tail", "to_sample",
           "verify_landing"]


@dataclass(frozen=True)
class ProcessResult:
    """What one child process cost."""

    wall_s: float
    cpu_s: float
    """User + system CPU seconds of the child itself."""
    peak_rss_mb: float
    exit_code: int
    s3_cpu_s: float
    """CPU seconds the S3 server process used while the child ran."""
    source_cpu_s: float
    """CPU seconds the row's source server (FTP, web site, API) used while the child ran."""
    log: Path
    """The child's stdout and stderr."""
    other_cpu_s: float = 0.0
    """CPU seconds the rest of the machine used meanwhile (other work sharing the cores)."""
    timed_out: bool = False


@dataclass
class Sample:
    """One measured run of one client on one dataset."""

    dataset: str
    client: str
    """``module_system`` (one job: the shape users run), ``ms_split``, ``rclone``, ``raw``, ``scrapy``,
    ``requests_pool``, ``ms_rerun_same``, ``ms_rerun_incremental``, ``noop_N``..."""
    repeat: int
    files: int
    bytes: int
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    s3_cpu_s: float
    source_cpu_s: float
    """CPU seconds of the row's source server (FTP, web site, API; 0 when the source is the S3 server)."""
    other_cpu_s: float
    """CPU seconds used meanwhile by anything but the client and the servers: noise."""
    exit_code: int
    ok: bool
    """The run exited as expected and every file landed with its size."""
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mb_s(self) -> float:
        return self.bytes / 1e6 / self.wall_s if self.wall_s else 0.0

    @property
    def files_s(self) -> float:
        return self.files / self.wall_s if self.wall_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mb_s": round(self.mb_s, 3), "files_s": round(self.files_s, 3)}


class Servers:
    """The S3 and FTP server processes of one benchmark run, and the rows' own servers (web site, API)."""

    def __init__(self, ftp_root: Path) -> None:
        self.s3 = ServerProcess("s3")
        try:
            self.ftp = ServerProcess("ftp", "--root", str(ftp_root))
        except BaseException:
            self.s3.stop()
            raise
        self.s3_url: str = self.s3.info["url"]
        self.extra: list[ServerProcess] = []

    def start(self, kind: str, *args: str) -> ServerProcess:
        """One more server process (``python -m bench.servers KIND ARGS``), stopped with the others."""
        server = ServerProcess(kind, *args)
        self.extra.append(server)
        return server

    def client(self) -> Any:
        """A boto3 S3 client of the benchmark process itself (set-up and checks, never timed)."""
        from module_system.testing import s3_client

        return s3_client(self.s3_url)

    def reset(self) -> None:
        """Drop every bucket: keeps the server's memory flat between runs (not timed)."""
        import requests

        requests.post(f"{self.s3_url}/moto-api/reset", timeout=120)

    def stop(self) -> None:
        for server in self.extra:
            server.stop()
        self.ftp.stop()
        self.s3.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Spawner:
    """The :mod:`bench.spawner` process, started on first use and kept for the whole run."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.lock = threading.Lock()

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], log: Path, timeout_s: float) -> dict[str, Any]:
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                script = Path(__file__).with_name("spawner.py")
                self.proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, text=True, cwd=script.parent)
            assert self.proc.stdin is not None and self.proc.stdout is not None
            request = {"argv": [str(a) for a in argv], "cwd": str(cwd), "env": env, "log": str(log),
                       "timeout_s": timeout_s}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"bench spawner exited (code {self.proc.wait()})")
            answer: dict[str, Any] = json.loads(line)
            return answer


_SPAWNER = _Spawner()


def run_process(argv: list[str], *, cwd: Path, env: dict[str, str], log: Path, servers: Servers,
                timeout_s: float = 3600, source: ServerProcess | None = None) -> ProcessResult:
    """Run ``argv`` to its end; its own wall, CPU and peak RSS, and the servers' CPU meanwhile.

    ``source`` is the server the row reads from (default: the FTP server); its CPU is
    ``source_cpu_s``. Give the S3 server itself for a row that reads from S3: its CPU
    is then counted once, as ``s3_cpu_s``, and ``source_cpu_s`` is 0.
    """
    source = servers.ftp if source is None else source
    src = None if source is servers.s3 else source
    s3_before, busy_before = servers.s3.cpu_seconds(), machine_busy_seconds()
    src_before = src.cpu_seconds() if src else 0.0
    done = _SPAWNER.run(argv, cwd, env, log, timeout_s)
    busy = machine_busy_seconds() - busy_before
    cpu, s3_cpu = done["utime"] + done["stime"], servers.s3.cpu_seconds() - s3_before
    src_cpu = src.cpu_seconds() - src_before if src else 0.0
    return ProcessResult(
        wall_s=done["wall_s"], cpu_s=cpu, peak_rss_mb=done["maxrss_kib"] / 1024, exit_code=done["status"],
        s3_cpu_s=s3_cpu, source_cpu_s=src_cpu, log=log, other_cpu_s=max(0.0, busy - cpu - s3_cpu - src_cpu),
        timed_out=done["timed_out"],
    )


def machine_busy_seconds() -> float:
    """CPU seconds all cores have spent not idle since boot (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK")


def landed(s3: Any, bucket: str, prefix: str = "") -> dict[str, int]:
    """Size of every object under ``prefix`` by key (manifests excluded)."""
    found: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if not obj["Key"].startswith("_manifests/"):
                found[obj["Key"]] = obj["Size"]
    return found


def landed_files(folder: Path) -> dict[str, int]:
    """Size of every file a ``local`` destination holds under ``folder`` by key (manifests and
    the destination's own index excluded)."""
    found: dict[str, int] = {}
    for path in folder.rglob("*") if folder.exists() else ():
        key = path.relative_to(folder).as_posix()
        if path.is_file() and not key.startswith(("_manifests/", "_module_system/")):
            found[key] = path.stat().st_size
    return found


def verify_landing(s3: Any, bucket: str, prefix: str, expected: dict[str, int]) -> tuple[bool, str]:
    """Every expected file (by base name) under ``prefix`` with its size, and nothing else anywhere.

    Returns ``(ok, note)``; the note counts what is missing, of the wrong size or extra.
    """
    objects = landed(s3, bucket)
    under = {key.rsplit("/", 1)[-1]: size for key, size in objects.items() if key.startswith(prefix)}
    elsewhere = [key for key in objects if not key.startswith(prefix)]
    missing = [name for name in expected if name not in under]
    wrong = [name for name in expected if name in under and under[name] != expected[name]]
    extra = [name for name in under if name not in expected]
    ok = not (missing or wrong or extra or elsewhere)
    note = (f"{len(under)} objects, {sum(under.values())} bytes" if ok else
            f"LANDING CHECK FAILED: {len(missing)} missing, {len(wrong)} wrong size, {len(extra)} extra, "
            f"{len(elsewhere)} outside {prefix!r}")
    return ok, note


def to_sample(result: ProcessResult, dataset: str, client: str, repeat: int, files: int, size: int,
              ok: bool, note: str, **extra: Any) -> Sample:
    """A :class:`Sample` from a process result and its check."""
    if result.timed_out:
        ok, note = False, f"timed out; {note}"
    return Sample(dataset, client, repeat, files, size, round(result.wall_s, 4), round(result.cpu_s, 3),
                  round(result.peak_rss_mb, 1), round(result.s3_cpu_s, 3), round(result.source_cpu_s, 3),
                  round(result.other_cpu_s, 3), result.exit_code, ok, note, dict(extra))


def tail(path: Path, chars: int = 1500) -> str:
    """The end of a log file, for error messages."""
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""
