"""What a run shows on the console: live statistics while it runs, a summary at the end.

On a TTY (``--log-format console``) a ``rich`` live panel redraws in place; otherwise a
JSON stats line goes to stderr every few seconds. The end summary is one line per job
(a table in console format, JSON lines in json format) and the failed-jobs file's path.
Every name, URI and error shown in console format goes through
:func:`common.terminal_text.printable` and reaches rich as ``Text``, never as markup.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from common.manifest import LANDED
from common.secret import redact
from common.terminal_text import printable
from orchestrator.job_runner import JobResult
from orchestrator.run_stats import StatsSnapshot


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


class ProgressDisplay:
    """Called with a stats snapshot every refresh; ``close()`` when the run ends."""

    def __init__(self, fmt: str, stream: TextIO | None = None, json_every_s: float = 5.0) -> None:
        self.fmt = fmt
        self.stream = stream or sys.stderr
        self.json_every_s = json_every_s
        self._last_json = 0.0
        self._live: Live | None = None
        if fmt == "console" and self.stream.isatty():
            self._live = Live(console=Console(file=self.stream), refresh_per_second=4, transient=False)
            self._live.start()

    def __call__(self, snap: StatsSnapshot) -> None:
        if self._live is not None:
            self._live.update(_stats_table(snap))
            return
        now = time.monotonic()
        if now - self._last_json >= self.json_every_s:
            self._last_json = now
            self.stream.write(json.dumps({"event": "stats", **snap.to_dict()}) + "\n")
            self.stream.flush()

    def close(self, snap: StatsSnapshot) -> None:
        if self._live is not None:
            self._live.update(_stats_table(snap))
            self._live.stop()
        else:
            self.stream.write(json.dumps({"event": "stats", **snap.to_dict()}) + "\n")
            self.stream.flush()


def _stats_table(s: StatsSnapshot) -> Text:
    """Two short lines that fit an 80-column terminal."""
    jobs = s.jobs
    ok = sum(s.files.get(status, 0) for status in LANDED)
    return Text.assemble(
        ("jobs  ", "bold"), f"{s.submitted} submitted · {jobs['queued']} queued · {jobs['running']} running · ",
        (f"{jobs['succeeded']} succeeded", "green"), " · ", (f"{jobs['failed']} failed", "red"),
        f" · {jobs['timed_out'] + jobs['cancelled']} stopped\n",
        ("files ", "bold"), f"{ok} ok · {s.files.get('rejected', 0)} rejected · {s.files.get('failed', 0)} failed · ",
        f"{s.files_per_s:.1f} files/s · {human_bytes(s.bytes_per_s)}/s · {s.elapsed_s:.1f}s",
    )


def print_summary(results: Sequence[JobResult], fmt: str, failed_jobs_file: Path | None,
                  report_file: Path | None, stream: TextIO | None = None,
                  rerun_args: Sequence[str] | None = None, totals: Mapping[str, Any] | None = None,
                  exit_code: int | None = None, job_lines: bool = True) -> None:
    """One line per job (unless ``job_lines`` is False: ``-q``), then where the failed-jobs
    file and report are, and the arguments that re-run the failed jobs (``rerun_args``,
    default ``--batch-file FILE``). In json format the last line is the ``run_summary``
    record, which carries the run's ``totals`` and ``exit_code`` too."""
    stream = stream or sys.stdout
    rerun = shlex.join(rerun_args or ["--batch-file", str(failed_jobs_file)]) if failed_jobs_file else None
    if fmt == "json":
        for r in results if job_lines else ():
            stream.write(json.dumps({"event": "job_summary", **_summary_fields(r)}) + "\n")
        stream.write(json.dumps({"event": "run_summary", "exit_code": exit_code, "totals": totals,
                                 "failed_jobs_file": _str(failed_jobs_file),
                                 "rerun": rerun, "report": _str(report_file)}) + "\n")
        stream.flush()
        return
    if not job_lines:
        if failed_jobs_file:
            stream.write(printable(f"Failed jobs written to {failed_jobs_file} (re-run with {rerun})") + "\n")
        return
    console = Console(file=stream, width=max(Console(file=stream).width, 120))
    table = Table(show_header=True, header_style="bold")
    for column in ("job_id", "service_id", "status", "ok", "rejected", "failed", "bytes", "seconds", "error"):
        table.add_column(column, justify="right" if column in ("ok", "rejected", "failed", "bytes", "seconds") else "left")
    for r in results:
        f = _summary_fields(r)
        table.add_row(*map(_text, (r.job_id, r.service_id, r.status, str(f["files_ok"]), str(f["files_rejected"]),
                                   str(f["files_failed"]), human_bytes(r.bytes), f"{r.seconds:.2f}", f["error"] or "")))
    console.print(table)
    if failed_jobs_file:
        console.print(_text(f"Failed jobs written to {failed_jobs_file} (re-run with {rerun})"), soft_wrap=True)
    if report_file:
        console.print(_text(f"Report written to {report_file}"))


def _text(value: str) -> Text:
    """``value`` for rich: control characters made visible, never read as markup."""
    return Text(printable(value))


def _summary_fields(r: JobResult) -> dict[str, Any]:
    return {
        "job_id": r.job_id, "service_id": r.service_id, "status": r.status,
        "files_ok": sum(r.files.get(status, 0) for status in LANDED),
        "files_rejected": r.files.get("rejected", 0), "files_failed": r.files.get("failed", 0),
        "bytes": r.bytes, "seconds": round(r.seconds, 3), "error": redact(r.error) if r.error else r.error,
    }


def _str(path: Path | None) -> str | None:
    return str(path) if path else None
