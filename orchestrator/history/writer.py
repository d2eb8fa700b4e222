"""The write side of the history: :class:`HistoryRecorder`, a run observer feeding one writer thread.

The recorder turns each observer call into a row (or an update) on a queue and returns at once;
the writer thread opens the database (and upgrades its schema) itself, then writes what the
queue holds in batches, one transaction every ``flush_s`` seconds or ``batch`` rows, with
``executemany``. So the run never waits for the database: not to connect, not for a lock.

A database that is down, refuses us, or stays locked past ``timeout_s`` is one warning
(``history_unavailable``, the URL without its password, the reason) and never a failed run:
the rows wait in memory (up to ``max_pending``; more are dropped and counted) and the writer
tries again every ``retry_s`` seconds and once more when the run ends; ``history_recovered``
says when it got through. :meth:`HistoryRecorder.close` waits at most ``close_timeout_s`` for
the last rows, so a run ends on time even when the database never answers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import socket
import sqlite3
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from common.secret import redact
from orchestrator.run_observer import RunObserver, RunView

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.engine import URL

    from common.manifest import ManifestEntry
    from orchestrator.history.store import HistoryStore
    from orchestrator.job_executor import RunOutcome
    from orchestrator.job_runner import JobResult

__all__ = ["HistoryRecorder", "run_status"]

log = structlog.get_logger(__name__)

_MAX_PROBLEMS = 20
"""Problems kept per file row (the manifest and the ``.errors.json`` keep them all)."""
_STOP = object()


def run_status(exit_code: int) -> str:
    """A finished run's status from its exit code (0, 1, 130)."""
    return {0: "succeeded", 130: "interrupted"}.get(exit_code, "failed")


def _when(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class HistoryRecorder(RunObserver):
    """Records one run into the history database at ``url`` (see the module docstring): a URL,
    or its text (then SQLAlchemy is first imported by the writer thread, not the caller)."""

    def __init__(self, url: URL | str, timeout_s: float = 5.0, flush_s: float = 0.25, batch: int = 2000,
                 retry_s: float = 5.0, max_pending: int = 200_000, close_timeout_s: float = 30.0) -> None:
        self._url = url
        self._timeout_s, self._flush_s, self._batch = timeout_s, flush_s, batch
        self._retry_s, self._max_pending, self._close_timeout_s = retry_s, max_pending, close_timeout_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._run_id = ""
        self._store: HistoryStore | None = None
        self._pending: list[tuple[str, Any]] = []
        self._dropped = 0
        self._fast: _SqliteRows | None = None
        self._probed = False
        """Whether the database was looked at for :class:`_SqliteRows` yet."""
        self._closing = threading.Event()
        self._behind = False
        """The last window brought ``batch`` rows: take the next at once."""
        self._failing_since: float | None = None
        self.warned = False
        """True once the database failed in this run (the warning is out)."""
        self.written = 0
        """Rows and updates written so far."""
        self._thread = threading.Thread(target=self._loop, name="history-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ observer calls (any thread)

    def run_started(self, run: RunView) -> None:
        self._run_id = run.run_id
        self._queue.put(("run", {
            "run_id": run.run_id, "status": "running", "exit_code": None, "started_at": run.started_at,
            "finished_at": None, "batch_file": str(run.batch_file.resolve()), "registry_file": str(run.registry_file.resolve()),
            "hostname": socket.gethostname()[:255], "pid": os.getpid(), "log_dir": str(run.log_dir.resolve()),
            "max_workers": run.max_workers, "jobs_total": len(run.jobs), "stop_reason": None, "totals": None,
            "failed_jobs_file": None, "report_file": None}))
        self._queue.put(("jobs", [{
            "run_id": run.run_id, "job_id": j.job_id, "service_id": j.service_id, "module": j.module,
            "position": j.position, "priority": j.priority, "status": "queued", "attempts": 0, "source_used": None,
            "files": None, "bytes": 0, "seconds": None, "error": None, "started_at": None, "finished_at": None,
            "log_file": j.log_file} for j in run.jobs]))

    def job_started(self, job_id: str, at: dt.datetime) -> None:
        self._queue.put(("job", {"b_run_id": self._run_id, "b_job_id": job_id, "status": "running", "started_at": at}))

    def file_done(self, job_id: str, attempt: int, entry: ManifestEntry, seconds: float | None) -> None:
        now = _now()
        problems = [p.to_dict() for p in entry.errors[:_MAX_PROBLEMS]]
        self._queue.put(("file", {
            "run_id": self._run_id, "job_id": job_id, "attempt": attempt, "source_uri": entry.source_uri,
            "key": entry.key, "status": entry.status, "size": entry.size, "sha256": entry.sha256,
            "seconds": None if seconds is None else round(seconds, 4), "finished_at": now,
            "problems": problems or None, "unchecked": entry.unchecked,
            "destinations": [{"name": d.name, **d.to_dict()} for d in entry.destinations] or None}))
        if entry.status in ("rejected", "failed"):
            first = entry.errors[0].message if entry.errors else entry.status
            level = "warning" if entry.status == "rejected" else "error"
            self._event(f"file_{entry.status}", job_id, level, f"{entry.source_uri}: {first}"[:2000],
                        {"uri": entry.source_uri, "key": entry.key, "problems": len(entry.errors)}, now)

    def event(self, kind: str, job_id: str | None, level: str, message: str, fields: Mapping[str, Any]) -> None:
        self._event(kind, job_id, level, message, fields, _now())
        if kind == "run_stopping":
            self._queue.put(("run_update", {"b_run_id": self._run_id, "stop_reason": str(fields.get("reason"))[:16]}))

    def _event(self, kind: str, job_id: str | None, level: str, message: str, fields: Mapping[str, Any],
               at: dt.datetime) -> None:
        safe = {k: redact(v) if isinstance(v, str) else v for k, v in fields.items()}
        self._queue.put(("event", {"run_id": self._run_id, "job_id": job_id, "at": at, "kind": kind[:40],
                                   "level": level, "message": redact(message)[:2000], "fields": safe or None}))

    def job_finished(self, result: JobResult) -> None:
        self._queue.put(("job", {
            "b_run_id": self._run_id, "b_job_id": result.job_id, "status": result.status, "attempts": result.attempts,
            "source_used": None if result.source_used is None else str(result.source_used),
            "files": dict(result.files), "bytes": result.bytes, "seconds": round(result.seconds, 3),
            "error": result.error, "started_at": _when(result.started_at), "finished_at": _when(result.finished_at)}))

    def run_finished(self, outcome: RunOutcome) -> None:
        from orchestrator.run_report import report_totals

        code = int(outcome.exit_code)
        self._queue.put(("run_update", {
            "b_run_id": outcome.run_id, "status": run_status(code), "exit_code": code,
            "finished_at": outcome.finished_at, "totals": report_totals(outcome)}))

    def run_outputs(self, failed_jobs_file: Path | None, report: Path | None) -> None:
        """Where the run's failed-jobs file and report went (after the run; None: none written)."""
        self._queue.put(("run_update", {
            "b_run_id": self._run_id, "failed_jobs_file": str(failed_jobs_file.resolve()) if failed_jobs_file else None,
            "report_file": str(report.resolve()) if report else None}))

    def close(self) -> bool:
        """Write what is left and stop the writer; True when everything reached the database."""
        self._queue.put(_STOP)
        self._closing.set()
        self._thread.join(self._close_timeout_s)
        if self._thread.is_alive():
            log.warning("history_incomplete", run_id=self._run_id, db=self.shown_url(),
                        reason=f"the history database did not take the last rows within {self._close_timeout_s:g} s")
            return False
        return not self._pending and not self._dropped

    def shown_url(self) -> str:
        """The database's URL without its password."""
        from orchestrator.history.store import history_url, shown

        return shown(history_url(self._url) if isinstance(self._url, str) else self._url)

    # ------------------------------------------------------------------ the writer thread

    def _loop(self) -> None:
        try:
            stopping = False
            while not stopping:
                stopping = self._collect()
                if self._failing_since is not None and not stopping \
                        and time.monotonic() - self._failing_since < self._retry_s:
                    continue
                self._write()
        finally:
            if self._store is not None:
                self._store.close()
            if self._fast is not None:
                self._fast.close()

    def _collect(self) -> bool:
        """Move queued ops to ``_pending``: wait for one, let ``flush_s`` pass (or the run close),
        then take what came meanwhile, up to ``batch``. True on close.

        The writer sleeps through the window rather than waking for each row (a thread switch per
        file, on the interpreter lock the run's transfers need); when a window brings ``batch``
        rows or more, the next is not waited for."""
        try:
            item = self._queue.get(timeout=self._retry_s if self._failing_since is not None else None)
        except queue.Empty:
            return False
        if not self._behind:
            self._closing.wait(self._flush_s)
        taken = 0
        while True:
            if item is _STOP:
                return True
            if len(self._pending) < self._max_pending:
                self._pending.append(item)
            else:
                self._dropped += 1
            taken += 1
            self._behind = taken >= self._batch
            if self._behind:
                return False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False

    def _write(self) -> None:
        if not self._pending:
            return
        if not self._probed:
            self._probed = True
            self._fast = _SqliteRows.open(self._url, self._timeout_s) if isinstance(self._url, str) else None
        if self._fast is not None:
            try:
                self._fast.write(_groups(self._pending))
            except (sqlite3.Error, OSError) as exc:
                self._failed(exc)
                return
            self._written()
            return
        import sqlalchemy as sa

        from orchestrator.history.store import (
            HistoryStore,
            HistoryUnavailable,
            history_url,
        )

        try:
            if self._store is None:
                url = history_url(self._url) if isinstance(self._url, str) else self._url
                self._store = HistoryStore.open(url, self._timeout_s)
            with self._store.engine.begin() as conn:
                for kind, rows in _groups(self._pending):
                    _execute(conn, kind, rows)
        except (HistoryUnavailable, sa.exc.SQLAlchemyError, OSError) as exc:
            self._failed(exc)
            return
        self._written()

    def _written(self) -> None:
        self.written += len(self._pending)
        self._pending = []
        if self._failing_since is not None:
            self._failing_since = None
            log.info("history_recovered", run_id=self._run_id, db=self.shown_url())

    def _failed(self, exc: BaseException) -> None:
        from orchestrator.history.store import HistoryUnavailable, describe_error

        self._failing_since = time.monotonic()
        if self._store is not None and not isinstance(exc, HistoryUnavailable):
            self._store.engine.dispose()  # a broken connection is not reused
        if not self.warned:
            self.warned = True
            reason = str(exc) if isinstance(exc, HistoryUnavailable) else describe_error(exc)
            log.warning("history_unavailable", run_id=self._run_id, db=self.shown_url(), error=reason,
                        effect="the run goes on; its history is written if the database answers before it ends")


_TABLES = {"run": "ms_runs", "jobs": "ms_jobs", "file": "ms_files", "event": "ms_events",
           "job": "ms_jobs", "run_update": "ms_runs"}
_JSON_COLUMNS = frozenset({"totals", "files", "problems", "destinations", "fields"})
"""The JSON columns of the history's tables (a test keeps this equal to the models')."""


class _SqliteRows:
    """The rows of a run into the default SQLite history (``sqlite:///<state-dir>/history.sqlite3``)
    through the standard library's ``sqlite3``, stored as SQLAlchemy stores them (a test compares
    the two databases value for value). A run then does not import SQLAlchemy (~0.15 s of CPU, on
    the interpreter lock its transfers need) to write its history. Only for a database at
    :data:`~orchestrator.history.HEAD`: a new or older one goes through HistoryStore, which
    creates or upgrades it."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    @classmethod
    def open(cls, url: str, timeout_s: float) -> _SqliteRows | None:
        """For ``sqlite:///<absolute path>`` of a database at HEAD; else None."""
        from orchestrator.history import HEAD

        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:////") else ""
        if not path or not os.path.isfile(path):
            return None
        try:
            conn = sqlite3.connect(path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return None
        try:
            version = conn.execute("SELECT version_num FROM ms_alembic_version").fetchone()
            if version is None or version[0] != HEAD:
                conn.close()
                return None
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON"):  # as HistoryStore's engine
                conn.execute(f"PRAGMA {pragma}")
        except sqlite3.Error:
            conn.close()
            return None
        return cls(conn)

    def write(self, groups: list[tuple[str, list[dict[str, Any]]]]) -> None:
        """One transaction."""
        self._conn.execute("BEGIN")
        try:
            for kind, rows in groups:
                self._conn.executemany(_statement(kind, rows[0]), [_stored(row) for row in rows])
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


def _statement(kind: str, first: Mapping[str, Any]) -> str:
    """The INSERT (or, for ``job``/``run_update``, the UPDATE of the first row's columns; ``b_``
    keys select the row) of ``kind``, named parameters."""
    table = _TABLES[kind]
    columns = [name for name in first if not name.startswith("b_")]
    if kind in ("job", "run_update"):
        where = 'WHERE "run_id" = :b_run_id' + (' AND "job_id" = :b_job_id' if kind == "job" else "")
        return f'UPDATE "{table}" SET ' + ", ".join(f'"{c}" = :{c}' for c in columns) + f" {where}"
    return (f'INSERT INTO "{table}" (' + ", ".join(f'"{c}"' for c in columns) + ") VALUES ("
            + ", ".join(f":{c}" for c in columns) + ")")


def _stored(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row``'s values as SQLAlchemy's SQLite types store them: JSON as ``json.dumps`` text (None
    as NULL), datetimes as ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC, the zone dropped), booleans as 0/1."""
    stored: dict[str, Any] = {}
    for name, value in row.items():
        if value is None:
            stored[name] = None
        elif name in _JSON_COLUMNS:
            stored[name] = json.dumps(value)
        elif isinstance(value, dt.datetime):
            stored[name] = (f"{value.year:04d}-{value.month:02d}-{value.day:02d} "
                            f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}")
        elif isinstance(value, bool):
            stored[name] = int(value)
        else:
            stored[name] = value
    return stored


def _groups(ops: list[tuple[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    """Consecutive ops of one kind (and, for updates, one set of columns) as one ``executemany``."""
    groups: list[tuple[str, list[dict[str, Any]]]] = []
    last: tuple[str, Any] | None = None
    for kind, payload in ops:
        rows = payload if isinstance(payload, list) else [payload]
        if not rows:
            continue
        shape = (kind, tuple(rows[0])) if kind in ("job", "run_update") else (kind, None)
        if shape == last:
            groups[-1][1].extend(rows)
        else:
            groups.append((kind, list(rows)))
            last = shape
    return groups


def _execute(conn: sa.Connection, kind: str, rows: list[dict[str, Any]]) -> None:
    import sqlalchemy as sa

    from orchestrator.history.models import EVENTS, FILES, JOBS, RUNS

    if kind == "run":
        conn.execute(RUNS.insert(), rows)
    elif kind == "jobs":
        conn.execute(JOBS.insert(), rows)
    elif kind == "file":
        conn.execute(FILES.insert(), rows)
    elif kind == "event":
        conn.execute(EVENTS.insert(), rows)
    elif kind == "job":
        # executemany: the SET clause is the first row's columns (the b_ keys only select the row)
        conn.execute(JOBS.update().where(JOBS.c.run_id == sa.bindparam("b_run_id"),
                                         JOBS.c.job_id == sa.bindparam("b_job_id")), rows)
    elif kind == "run_update":
        conn.execute(RUNS.update().where(RUNS.c.run_id == sa.bindparam("b_run_id")), rows)
    else:  # pragma: no cover - the kinds are ours
        raise ValueError(kind)
