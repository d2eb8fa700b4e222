"""What the rows beyond FTP -> S3 share: their context, and running the module_system CLI for one.

A row (:mod:`bench.s3_copy`, :mod:`bench.web_bench`, :mod:`bench.api_bench`,
:mod:`bench.scale_bench`) is a class with a ``name`` (the dataset column of the table), the
``clients`` it measures in rotation, :meth:`Row.prepare` (data and servers, not timed) and
:meth:`Row.run` (one measured, checked run of one client: a :class:`~bench.measure.Sample`).
``bench/run.py`` runs each row's clients ``--repeat`` times, the order rotating every repeat,
and resets the S3 server after every run.
"""

from __future__ import annotations

import abc
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from bench.clients import RcloneClient, base_env, shared_state_dir
from bench.measure import ProcessResult, Sample, Servers, run_process, tail
from bench.servers import ServerProcess

__all__ = ["CliRun", "Row", "RowContext", "failed_note"]


@dataclass
class RowContext:
    """What every row gets from ``bench/run.py``."""

    workdir: Path
    """The bench's work directory (data sets and run directories below it)."""
    servers: Servers
    rclone: RcloneClient | None
    quick: bool
    """Small sizes (``--quick``)."""


class Row(abc.ABC):
    """One row of the table (see the module docstring)."""

    name: ClassVar[str]
    clients: ClassVar[tuple[str, ...]]

    def __init__(self, ctx: RowContext) -> None:
        self.ctx = ctx
        self.dir = ctx.workdir / "runs" / self.name.lower()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)

    @property
    def measured(self) -> tuple[str, ...]:
        """The clients this machine can run (all of :attr:`clients` unless a tool is missing)."""
        return self.clients

    def prepare(self) -> None:
        """Build the data, start the servers (not timed)."""

    @abc.abstractmethod
    def run(self, client: str, repeat: int, wrap: Sequence[str] = ()) -> Sample:
        """One measured run of ``client``, checked; ``wrap`` goes before a module_system command (py-spy)."""


class CliRun:
    """The module_system CLI with a registry and a batch of this row's own, in a directory of its own."""

    def __init__(self, row_dir: Path, label: str, registry: dict[str, Any], jobs: list[dict[str, Any]],
                 files: dict[str, Any] | None = None) -> None:
        self.dir = row_dir / label
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        (self.dir / "registry.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
        (self.dir / "batch.json").write_text(json.dumps({"description": label, "jobs": jobs}, indent=1))
        for name, document in (files or {}).items():
            (self.dir / name).write_text(json.dumps(document, indent=1))
        self.log = self.dir / "run.log"

    def run(self, servers: Servers, env: dict[str, str], wrap: Sequence[str] = (), max_workers: int = 8,
            source: ServerProcess | None = None, timeout_s: float = 3600) -> tuple[ProcessResult, dict[str, Any]]:
        """The run's cost and its ``--report`` (empty when none was written)."""
        argv = [*wrap, sys.executable, "-m", "orchestrator.cli_init", "--batch-file", "batch.json",
                "--registry", "registry.yaml", "--max-workers", str(max_workers), "--report", "report.json",
                "--log-format", "json", "--log-dir", "logs", "--state-dir", str(shared_state_dir(self.dir.parent.parent))]
        result = run_process(argv, cwd=self.dir, env={**base_env(servers), "LOG_LEVEL": "INFO", **env}, log=self.log,
                             servers=servers, timeout_s=timeout_s, source=source)
        report_path = self.dir / "report.json"
        return result, (json.loads(report_path.read_text()) if report_path.exists() else {})

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def failed_note(result: ProcessResult, note: str) -> str:
    """``note`` with the exit code and the end of the log of a run that did not exit 0."""
    if result.exit_code == 0:
        return note
    return f"{note}; exit {result.exit_code}: {tail(result.log, 400)!r}"


def file_totals(report: dict[str, Any]) -> dict[str, int]:
    """The run report's file counts (``uploaded``, ``rejected``, ``skipped_unchanged``...)."""
    totals: dict[str, int] = report.get("totals", {}).get("files", {})
    return totals


def destination(bucket_var: str = "BENCH_BUCKET") -> dict[str, str]:
    """The ``destination`` of every row's registry: the bucket from the environment, the bench's S3 server."""
    return {"bucket": "${" + bucket_var + "}", "endpoint_url": "${S3_URL}"}


def to_row_sample(result: ProcessResult, row: str, client: str, repeat: int, files: int, size: int, ok: bool,
                  note: str, **extra: Any) -> Sample:
    """A sample of a row's run (see :func:`bench.measure.to_sample`)."""
    from bench.measure import to_sample

    return to_sample(result, row, client, repeat, files, size, ok, failed_note(result, note), **extra)
