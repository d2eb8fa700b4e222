"""``module-system history`` and ``module-system show RUN_ID``: the run history on the terminal.

Both read the history database of ``--history-db`` (``$MODULE_SYSTEM_HISTORY_DB``), else
``<state-dir>/history.sqlite3``, through :class:`~orchestrator.history.reader.HistoryReader`;
``--format json`` prints the reader's documents (the same ones ``serve`` answers with).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from common.manifest import LANDED
from common.terminal_text import printable
from orchestrator.console import human_bytes
from orchestrator.history import DEFAULT_FILE
from orchestrator.history.reader import HistoryReader, RunDetail, RunSummary
from orchestrator.history.store import (
    HistoryStore,
    HistoryUnavailable,
    history_url,
    shown,
)

__all__ = ["HistoryError", "open_reader", "print_run", "print_runs"]

PROBLEM_STATUSES = ("rejected", "failed")


class HistoryError(Exception):
    """The history cannot be read (the message is one line for stderr)."""


@contextmanager
def open_reader(history_db: str | None, state_dir: Path) -> Iterator[HistoryReader | None]:
    """A reader of the history database; None when the default SQLite file does not exist yet
    (no run recorded). ConfigError for a bad URL; HistoryError when the database fails."""
    url = history_url(history_db, state_dir)
    try:
        store = HistoryStore.open(url, create=False)
    except HistoryUnavailable as exc:
        if history_db is None and not (state_dir / DEFAULT_FILE).exists():
            yield None
            return
        raise HistoryError(f"history database {shown(url)}: {exc}") from None
    try:
        yield HistoryReader(store)
    finally:
        store.close()


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _row_text(values: list[str]) -> list[Text]:
    return [Text(printable(v)) for v in values]


def print_runs(runs: list[RunSummary], total: int, fmt: str, stream: TextIO) -> None:
    if fmt == "json":
        stream.write(json.dumps({"runs": [r.to_dict() for r in runs], "total": total}, indent=1) + "\n")
        return
    if not runs:
        stream.write("no runs recorded\n")
        return
    table = Table(show_header=True, header_style="bold")
    for column in ("run_id", "status", "started (UTC)", "seconds", "jobs ok/not", "files ok/rej/failed", "bytes",
                   "batch"):  # the batch's name: its path is in show and --format json
        table.add_column(column, justify="right" if column in ("seconds", "bytes") else "left", no_wrap=True,
                         overflow="ellipsis" if column == "batch" else "fold")
    for r in runs:
        not_ok = sum(r.jobs[s] for s in ("failed", "timed_out", "cancelled"))
        table.add_row(*_row_text([
            r.run_id, r.status, _when(r.started_at), f"{r.seconds:.1f}" if r.seconds is not None else "-",
            f"{r.jobs['succeeded']}/{not_ok}", f"{sum(r.files[s] for s in LANDED)}/{r.files['rejected']}/{r.files['failed']}",
            human_bytes(r.bytes), Path(r.batch_file).name]))
    console = Console(file=stream, width=max(Console(file=stream).width, 140))
    console.print(table)
    if total > len(runs):
        console.print(f"{len(runs)} of {total} runs (--limit for more)")


def print_run(reader: HistoryReader, detail: RunDetail, fmt: str, all_files: bool, stream: TextIO) -> None:
    """The run, its jobs, its events and its files (those rejected or failed, or all)."""
    run = detail.run
    statuses = None if all_files else PROBLEM_STATUSES
    if fmt == "json":
        jobs = []
        for job in detail.jobs:
            files = _all_files(reader, run.run_id, job.job_id, statuses)
            jobs.append({**job.to_dict(), "file_records": [f.to_dict() for f in files]})
        stream.write(json.dumps({"run": run.to_dict(), "jobs": jobs, "events": [e.to_dict() for e in detail.events]},
                                indent=1) + "\n")
        return
    console = Console(file=stream, width=max(Console(file=stream).width, 140))
    head = (f"run {run.run_id}: {run.status}" + (f" (exit {run.exit_code})" if run.exit_code is not None else "")
            + f", started {_when(run.started_at)} UTC" + (f", {run.seconds:.1f} s" if run.seconds is not None else "")
            + f", on {run.hostname}")
    console.print(Text(printable(head)))
    console.print(Text(printable(f"batch {run.batch_file}, registry {run.registry_file}, logs {run.log_dir}")))
    if run.failed_jobs_file:
        console.print(Text(printable(f"failed jobs: {run.failed_jobs_file}")))
    table = Table(show_header=True, header_style="bold")
    for column in ("job_id", "service_id", "status", "attempts", "ok", "rejected", "failed", "bytes", "seconds", "error"):
        table.add_column(column, justify="right" if column in ("attempts", "ok", "rejected", "failed", "bytes",
                                                               "seconds") else "left",
                         no_wrap=column != "error", overflow="fold")
    for job in detail.jobs:
        table.add_row(*_row_text([
            job.job_id, job.service_id, job.status, str(job.attempts), str(sum(job.files.get(s, 0) for s in LANDED)),
            str(job.files.get("rejected", 0)), str(job.files.get("failed", 0)), human_bytes(job.bytes),
            f"{job.seconds:.2f}" if job.seconds is not None else "-", job.error or ""]))
    console.print(table)
    events = [e for e in detail.events if e.kind not in ("file_rejected", "file_failed")]  # listed with the files
    if events:
        console.print("events:")
        for event in events:
            console.print(Text(printable(f"  {_when(event.at)}  {event.level:<7}  {event.job_id or '-'}  {event.kind}: "
                                         f"{event.message}")))
    shown_files = [f for job in detail.jobs for f in _all_files(reader, run.run_id, job.job_id, statuses)]
    if shown_files:
        console.print("files:" if all_files else "files rejected or failed:")
        for f in shown_files:
            reason = f"  ({f.problems[0]['message']})" if f.problems else ""
            console.print(Text(printable(f"  {f.job_id}  {f.status:<17}  {f.source_uri}"
                                         + (f" -> {f.key}" if f.key else "") + reason)))


def _all_files(reader: HistoryReader, run_id: str, job_id: str, statuses: tuple[str, ...] | None) -> list[Any]:
    out: list[Any] = []
    offset = 0
    while True:
        page = reader.files(run_id, job_id=job_id, status=statuses, limit=1000, offset=offset)
        out.extend(page.items)
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return out
