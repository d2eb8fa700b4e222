"""The history tables (SQLAlchemy Core): runs, their jobs, the jobs' files, notable events.

One schema for SQLite and PostgreSQL. ``migrations/`` (Alembic) creates and upgrades it: a
change here goes with a new revision there (``tests/orchestrator/history/test_schema.py``
compares the two). Times are UTC (SQLite hands them back naive: :func:`utc` reads them).
Rows are written by :mod:`orchestrator.history.writer` only, and read through
:mod:`orchestrator.history.reader`.

* ``ms_runs``: one row per run, ``running`` until it ends (then ``succeeded``, ``failed``:
  some job failed or some file was rejected, i.e. exit 1, or ``interrupted``);
  ``totals`` is the run report's ``totals`` once the run is over.
* ``ms_jobs``: one row per job of the batch, inserted ``queued`` when the run starts; its
  ``files`` (counts by status), ``bytes`` and ``error`` are the run report's for that job.
  ``id`` is the job's id across runs (a ``job_id`` repeats in every run of a batch).
* ``ms_files``: one row per file outcome of every source attempt (``attempt``); the job's
  counts are those of its last attempt, as in its manifest.
* ``ms_events``: retries, source failures, fallbacks, key collisions, duplicates, rejected
  and failed files, stops, in the order they happened (``id``).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

__all__ = ["EVENTS", "FILES", "JOBS", "METADATA", "RUNS", "utc"]

METADATA = sa.MetaData()

# INTEGER PRIMARY KEY is SQLite's auto-increment row id; BIGINT elsewhere.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_WHEN = sa.DateTime(timezone=True)

RUNS = sa.Table(
    "ms_runs", METADATA,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("exit_code", sa.Integer, nullable=True),
    sa.Column("started_at", _WHEN, nullable=False),
    sa.Column("finished_at", _WHEN, nullable=True),
    sa.Column("batch_file", sa.Text, nullable=False),
    sa.Column("registry_file", sa.Text, nullable=False),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("log_dir", sa.Text, nullable=False),
    sa.Column("max_workers", sa.Integer, nullable=False),
    sa.Column("jobs_total", sa.Integer, nullable=False),
    sa.Column("stop_reason", sa.String(16), nullable=True),
    sa.Column("totals", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("failed_jobs_file", sa.Text, nullable=True),
    sa.Column("report_file", sa.Text, nullable=True),
    sa.Index("ix_ms_runs_started_at", "started_at"),
    sa.Index("ix_ms_runs_status", "status"),
)

JOBS = sa.Table(
    "ms_jobs", METADATA,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("ms_runs.run_id", ondelete="CASCADE"), nullable=False),
    sa.Column("job_id", sa.String(255), nullable=False),
    sa.Column("service_id", sa.String(255), nullable=False),
    sa.Column("module", sa.String(64), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("source_used", sa.String(32), nullable=True),
    sa.Column("files", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("bytes", sa.BigInteger, nullable=False),
    sa.Column("seconds", sa.Float, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("started_at", _WHEN, nullable=True),
    sa.Column("finished_at", _WHEN, nullable=True),
    sa.Column("log_file", sa.Text, nullable=True),
    sa.UniqueConstraint("run_id", "job_id", name="uq_ms_jobs_run_job"),
    sa.Index("ix_ms_jobs_status", "status"),
)

FILES = sa.Table(
    "ms_files", METADATA,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("ms_runs.run_id", ondelete="CASCADE"), nullable=False),
    sa.Column("job_id", sa.String(255), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("source_uri", sa.Text, nullable=False),
    sa.Column("key", sa.Text, nullable=True),
    sa.Column("status", sa.String(24), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("seconds", sa.Float, nullable=True),
    sa.Column("finished_at", _WHEN, nullable=False),
    sa.Column("problems", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("unchecked", sa.Boolean, nullable=False),
    sa.Column("destinations", sa.JSON(none_as_null=True), nullable=True),
    sa.Index("ix_ms_files_run_job", "run_id", "job_id"),
    sa.Index("ix_ms_files_run_status", "run_id", "status"),
)

EVENTS = sa.Table(
    "ms_events", METADATA,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("ms_runs.run_id", ondelete="CASCADE"), nullable=False),
    sa.Column("job_id", sa.String(255), nullable=True),
    sa.Column("at", _WHEN, nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("level", sa.String(10), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("fields", sa.JSON(none_as_null=True), nullable=True),
    sa.Index("ix_ms_events_run_job", "run_id", "job_id"),
    sa.Index("ix_ms_events_kind", "kind"),
)


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """A stored time as an aware UTC datetime (SQLite returns it naive)."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
