"""The read side of the history: typed, paged queries for ``history``, ``show`` and ``serve``.

Every method returns frozen dataclasses (``to_dict()`` gives their JSON form, times as ISO 8601
UTC strings), never rows or ORM objects, and never raises for a missing id (None instead).
A run still in progress is read as it stands: its jobs' counts are live.

::

    reader = HistoryReader(HistoryStore.open(url, create=False))
    page = reader.list_runs(limit=20, status="failed")          # Page[RunSummary], newest first
    detail = reader.run(page.items[0].run_id)                   # RunDetail: run, jobs, run-level events
    job = reader.job(detail.jobs[0].id, files_limit=100)        # JobDetail: job, a page of files, events
    reader.files(run_id, job_id=..., status="rejected")         # Page[FileRecord]
    reader.events(run_id, after_id=last_seen)                   # Page[EventRecord], to follow a run
    reader.log_records(run_id, job_id=..., level="warning", text="timeout")  # LogPage, from the log files
    reader.throughput(run_id, buckets=60)                       # files and bytes landed per time slice
    reader.stats()                                              # totals over every run

Log records are not copied into the database: :meth:`HistoryReader.log_records` reads the
run's JSON log files (``log_dir`` recorded with the run, one file per job), so it sees them only
on the machine that ran the job.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import RowMapping

from common.logger import EXECUTOR_LOG
from common.manifest import FILE_STATUSES
from orchestrator.history.models import EVENTS, FILES, JOBS, RUNS, utc
from orchestrator.history.store import HistoryStore

__all__ = [
    "EventRecord", "FileRecord", "HistoryReader", "JobDetail", "JobSummary", "LogPage", "LogRecord", "Page",
    "RunDetail", "RunSummary", "Throughput",
]

T = TypeVar("T")
RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "timed_out", "cancelled")
LEVELS = ("debug", "info", "warning", "error", "critical")
MAX_LIMIT = 1000


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds") if value is not None else None


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return _iso(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class _Record:
    def to_dict(self) -> dict[str, Any]:
        return _plain(asdict(self))  # type: ignore[call-overload,no-any-return]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    total: int
    """How many match, over every page."""
    offset: int
    limit: int

    def to_dict(self) -> dict[str, Any]:
        return {"items": [i.to_dict() for i in self.items], "total": self.total,  # type: ignore[attr-defined]
                "offset": self.offset, "limit": self.limit}


@dataclass(frozen=True)
class RunSummary(_Record):
    run_id: str
    status: str
    """``running``, ``succeeded`` (exit 0), ``failed`` (exit 1: a job failed or a file was
    rejected) or ``interrupted`` (exit 130)."""
    exit_code: int | None
    started_at: dt.datetime
    finished_at: dt.datetime | None
    batch_file: str
    registry_file: str
    hostname: str
    pid: int
    log_dir: str
    max_workers: int
    stop_reason: str | None
    jobs: dict[str, int]
    """Jobs by status (``queued`` ... ``cancelled``), live while the run is in progress."""
    files: dict[str, int]
    """Files by status: the run report's totals once the run is over; while it runs, every
    outcome recorded so far (a retried source's first attempt included)."""
    bytes: int
    retries: int | None
    """None until the run is over."""
    failed_jobs_file: str | None
    report_file: str | None

    @property
    def seconds(self) -> float | None:
        return (self.finished_at - self.started_at).total_seconds() if self.finished_at else None


@dataclass(frozen=True)
class JobSummary(_Record):
    id: int
    """The job's id in the history (``job_id`` repeats across runs)."""
    run_id: str
    job_id: str
    service_id: str
    module: str
    position: int
    """Its place in the batch file, from 0."""
    priority: int
    status: str
    attempts: int
    source_used: str | None
    files: dict[str, int]
    bytes: int
    seconds: float | None
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    log_file: str | None


@dataclass(frozen=True)
class FileRecord(_Record):
    id: int
    run_id: str
    job_id: str
    attempt: int
    source_uri: str
    key: str | None
    status: str
    size: int
    sha256: str
    seconds: float | None
    finished_at: dt.datetime
    problems: list[dict[str, Any]]
    unchecked: bool
    destinations: list[dict[str, Any]]


@dataclass(frozen=True)
class EventRecord(_Record):
    id: int
    run_id: str
    job_id: str | None
    at: dt.datetime
    kind: str
    level: str
    message: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class RunDetail(_Record):
    run: RunSummary
    jobs: tuple[JobSummary, ...]
    """In batch order."""
    events: tuple[EventRecord, ...]
    """The run's events of no job (stops), and the last ``events_limit`` of its jobs'."""


@dataclass(frozen=True)
class JobDetail:
    job: JobSummary
    files: Page[FileRecord]
    events: Page[EventRecord]

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job.to_dict(), "files": self.files.to_dict(), "events": self.events.to_dict()}


@dataclass(frozen=True)
class LogRecord(_Record):
    timestamp: str | None
    level: str
    event: str
    job_id: str | None
    fields: dict[str, Any]
    """Everything else the record carries."""


@dataclass(frozen=True)
class LogPage(_Record):
    records: tuple[LogRecord, ...]
    file: str | None
    """The log file read (None: the run or job has none, or it is not on this machine)."""
    next_offset: int
    """Where to continue reading (a byte offset of ``file``): pass it as ``offset``."""


@dataclass(frozen=True)
class Throughput(_Record):
    started_at: dt.datetime | None
    bucket_s: float
    files: tuple[int, ...] = field(default=())
    """Files finished in each slice of ``bucket_s`` seconds from ``started_at``."""
    bytes: tuple[int, ...] = field(default=())


class HistoryReader:
    """Queries over one :class:`~orchestrator.history.store.HistoryStore`; thread-safe (a
    connection per call, from the engine's pool)."""

    def __init__(self, store: HistoryStore) -> None:
        self.store = store
        self._engine = store.engine

    # ------------------------------------------------------------------ runs

    def list_runs(self, limit: int = 50, offset: int = 0, status: str | None = None,
                  since: dt.datetime | None = None, until: dt.datetime | None = None,
                  batch: str | None = None) -> Page[RunSummary]:
        """Runs, newest first; ``status`` one of :data:`RUN_STATUSES`, ``since``/``until`` bound
        ``started_at``, ``batch`` a substring of the batch file's path."""
        limit, offset = _bounded(limit, offset)
        since, until = _as_utc(since), _as_utc(until)
        where: list[Any] = []
        if status:
            where.append(RUNS.c.status == status)
        if since is not None:
            where.append(RUNS.c.started_at >= since)
        if until is not None:
            where.append(RUNS.c.started_at < until)
        if batch:
            where.append(RUNS.c.batch_file.contains(batch, autoescape=True))
        with self._engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(RUNS).where(*where)).scalar_one()
            rows = conn.execute(sa.select(RUNS).where(*where)
                                .order_by(RUNS.c.started_at.desc(), RUNS.c.run_id.desc())
                                .limit(limit).offset(offset)).mappings().all()
            runs = self._summaries(conn, rows)
        return Page(tuple(runs), total, offset, limit)

    def run(self, run_id: str, events_limit: int = 200) -> RunDetail | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(RUNS).where(RUNS.c.run_id == run_id)).mappings().first()
            if row is None:
                return None
            summary = self._summaries(conn, [row])[0]
            jobs = conn.execute(sa.select(JOBS).where(JOBS.c.run_id == run_id).order_by(JOBS.c.position)).mappings()
            events = conn.execute(sa.select(EVENTS).where(EVENTS.c.run_id == run_id)
                                  .order_by(EVENTS.c.id.desc()).limit(events_limit)).mappings().all()
            return RunDetail(summary, tuple(_job(j) for j in jobs), tuple(_event(e) for e in reversed(events)))

    # ------------------------------------------------------------------ jobs

    def job(self, id: int, files_limit: int = 100, files_offset: int = 0, file_status: str | None = None,
            events_limit: int = 200) -> JobDetail | None:
        """One job by its history id: a page of its files (every attempt's, in the order they
        finished; ``file_status`` filters) and its last ``events_limit`` events."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(JOBS).where(JOBS.c.id == id)).mappings().first()
        return self._job_detail(row, files_limit, files_offset, file_status, events_limit)

    def find_job(self, run_id: str, job_id: str, **kwargs: Any) -> JobDetail | None:
        """One job by run and ``job_id``; the same keywords as :meth:`job`."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(JOBS).where(JOBS.c.run_id == run_id, JOBS.c.job_id == job_id)).mappings().first()
        return self._job_detail(row, **kwargs)

    def _job_detail(self, row: RowMapping | None, files_limit: int = 100, files_offset: int = 0,
                    file_status: str | None = None, events_limit: int = 200) -> JobDetail | None:
        if row is None:
            return None
        job = _job(row)
        files = self.files(job.run_id, job_id=job.job_id, status=file_status, limit=files_limit, offset=files_offset)
        events = self.events(job.run_id, job_id=job.job_id, last=events_limit)
        return JobDetail(job, files, events)

    def files(self, run_id: str, job_id: str | None = None, status: str | Sequence[str] | None = None,
              limit: int = 100, offset: int = 0) -> Page[FileRecord]:
        limit, offset = _bounded(limit, offset)
        where = [FILES.c.run_id == run_id]
        if job_id is not None:
            where.append(FILES.c.job_id == job_id)
        if status:
            where.append(FILES.c.status.in_([status] if isinstance(status, str) else list(status)))
        with self._engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(FILES).where(*where)).scalar_one()
            rows = conn.execute(sa.select(FILES).where(*where).order_by(FILES.c.id).limit(limit).offset(offset)).mappings()
            return Page(tuple(_file(r) for r in rows), total, offset, limit)

    def events(self, run_id: str, job_id: str | None = None, kinds: Iterable[str] | None = None,
               after_id: int = 0, limit: int = 200, last: int | None = None) -> Page[EventRecord]:
        """Events in the order they happened: those after ``after_id`` (to follow a run: pass the
        last id seen), at most ``limit``; or, with ``last``, the most recent ``last``."""
        where = [EVENTS.c.run_id == run_id, EVENTS.c.id > after_id]
        if job_id is not None:
            where.append(EVENTS.c.job_id == job_id)
        if kinds:
            where.append(EVENTS.c.kind.in_(list(kinds)))
        with self._engine.connect() as conn:
            total = conn.execute(sa.select(sa.func.count()).select_from(EVENTS).where(*where)).scalar_one()
            if last is not None:
                count, _ = _bounded(last, 0)
                newest = conn.execute(sa.select(EVENTS).where(*where).order_by(EVENTS.c.id.desc())
                                      .limit(count)).mappings().all()
                return Page(tuple(_event(r) for r in reversed(newest)), total, max(0, total - count), count)
            limit, _ = _bounded(limit, 0)
            rows = conn.execute(sa.select(EVENTS).where(*where).order_by(EVENTS.c.id).limit(limit)).mappings().all()
            return Page(tuple(_event(r) for r in rows), total, 0, limit)

    # ------------------------------------------------------------------ logs

    def log_records(self, run_id: str, job_id: str | None = None, level: str | None = None,
                    text: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
                    limit: int = 200, offset: int = 0) -> LogPage:
        """The run's (or one job's) log records from its JSON log file, in file order: at least
        ``level``, holding ``text`` (case-insensitive, anywhere in the record), stamped within
        [``since``, ``until``); at most ``limit``, read from byte ``offset``."""
        limit, offset = _bounded(limit, offset)
        since, until = _as_utc(since), _as_utc(until)
        with self._engine.connect() as conn:
            run = conn.execute(sa.select(RUNS.c.log_dir).where(RUNS.c.run_id == run_id)).first()
            log_file = None
            if job_id is not None:
                log_file = conn.execute(sa.select(JOBS.c.log_file)
                                        .where(JOBS.c.run_id == run_id, JOBS.c.job_id == job_id)).scalar()
        if run is None:
            return LogPage((), None, offset)
        path = Path(run.log_dir) / (log_file or EXECUTOR_LOG)
        minimum = LEVELS.index(level.lower()) if level and level.lower() in LEVELS else 0
        needle = text.lower() if text else None
        records: list[LogRecord] = []
        position = offset
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                for raw in fh:
                    if not raw.endswith(b"\n"):  # a line being written: read it next time
                        break
                    position += len(raw)
                    record = _log_record(raw, run_id, job_id, minimum, needle, since, until)
                    if record is not None:
                        records.append(record)
                        if len(records) >= limit:
                            break
        except OSError:
            return LogPage((), None, offset)
        return LogPage(tuple(records), str(path), position)

    # ------------------------------------------------------------------ aggregates

    def throughput(self, run_id: str, buckets: int = 60) -> Throughput:
        """Files and bytes (uploaded) finished per time slice of the run, ``buckets`` slices from
        its start to its end (or now)."""
        with self._engine.connect() as conn:
            run = conn.execute(sa.select(RUNS.c.started_at, RUNS.c.finished_at).where(RUNS.c.run_id == run_id)).first()
            if run is None:
                return Throughput(None, 0.0)
            start = utc(run.started_at)
            assert start is not None
            end = utc(run.finished_at) or dt.datetime.now(dt.timezone.utc)
            width = max((end - start).total_seconds() / max(1, buckets), 0.001)
            files, sizes = [0] * max(1, buckets), [0] * max(1, buckets)
            rows = conn.execution_options(yield_per=5000).execute(
                sa.select(FILES.c.finished_at, FILES.c.size, FILES.c.status).where(FILES.c.run_id == run_id))
            for finished, size, status in rows:
                at = utc(finished)
                assert at is not None
                index = min(len(files) - 1, max(0, int((at - start).total_seconds() / width)))
                files[index] += 1
                if status == "uploaded":
                    sizes[index] += size
            return Throughput(start, width, tuple(files), tuple(sizes))

    def stats(self, since: dt.datetime | None = None) -> dict[str, Any]:
        """Totals over every run (started since ``since``): runs by status, jobs by status, files by
        status and bytes of the finished runs."""
        since = _as_utc(since)
        where = [RUNS.c.started_at >= since] if since is not None else []
        with self._engine.connect() as conn:
            runs: dict[str, int] = {status: count for status, count in conn.execute(
                sa.select(RUNS.c.status, sa.func.count()).where(*where).group_by(RUNS.c.status))}
            jobs: dict[str, int] = {status: count for status, count in conn.execute(
                sa.select(JOBS.c.status, sa.func.count()).join(RUNS, RUNS.c.run_id == JOBS.c.run_id)
                .where(*where).group_by(JOBS.c.status))}
            files: Counter[str] = Counter()
            size = 0
            for (totals,) in conn.execute(sa.select(RUNS.c.totals).where(RUNS.c.totals.is_not(None), *where)):
                files.update(totals.get("files", {}))
                size += int(totals.get("bytes", 0))
        return {"runs": {s: runs.get(s, 0) for s in RUN_STATUSES}, "jobs": {s: jobs.get(s, 0) for s in JOB_STATUSES},
                "files": {s: files.get(s, 0) for s in FILE_STATUSES}, "bytes": size}

    # ------------------------------------------------------------------ helpers

    def _summaries(self, conn: sa.Connection, rows: Sequence[RowMapping]) -> list[RunSummary]:
        ids = [r["run_id"] for r in rows]
        jobs: dict[str, Counter[str]] = {i: Counter() for i in ids}
        if ids:
            for run_id, status, count in conn.execute(
                    sa.select(JOBS.c.run_id, JOBS.c.status, sa.func.count()).where(JOBS.c.run_id.in_(ids))
                    .group_by(JOBS.c.run_id, JOBS.c.status)):
                jobs[run_id][status] = count
        live = [r["run_id"] for r in rows if r["totals"] is None]
        files: dict[str, Counter[str]] = {i: Counter() for i in live}
        sizes: Counter[str] = Counter()
        if live:
            for run_id, status, count, size in conn.execute(
                    sa.select(FILES.c.run_id, FILES.c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(FILES.c.size), 0))
                    .where(FILES.c.run_id.in_(live)).group_by(FILES.c.run_id, FILES.c.status)):
                files[run_id][status] = count
                if status == "uploaded":
                    sizes[run_id] += int(size)
        out = []
        for r in rows:
            totals = r["totals"]
            counted = totals["files"] if totals else files[r["run_id"]]
            started = utc(r["started_at"])
            assert started is not None
            out.append(RunSummary(
                r["run_id"], r["status"], r["exit_code"], started, utc(r["finished_at"]),
                r["batch_file"], r["registry_file"], r["hostname"], r["pid"], r["log_dir"], r["max_workers"],
                r["stop_reason"], {s: jobs[r["run_id"]].get(s, 0) for s in JOB_STATUSES},
                {s: int(counted.get(s, 0)) for s in FILE_STATUSES},
                int(totals["bytes"]) if totals else sizes[r["run_id"]],
                int(totals["retries"]) if totals else None, r["failed_jobs_file"], r["report_file"]))
        return out


def _as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A time bound in UTC, as the times are stored (a naive one is taken as UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _bounded(limit: int, offset: int) -> tuple[int, int]:
    return max(1, min(int(limit), MAX_LIMIT)), max(0, int(offset))


def _job(r: RowMapping) -> JobSummary:
    return JobSummary(r["id"], r["run_id"], r["job_id"], r["service_id"], r["module"], r["position"], r["priority"],
                      r["status"], r["attempts"], r["source_used"], dict(r["files"] or {}), r["bytes"], r["seconds"],
                      r["error"], utc(r["started_at"]), utc(r["finished_at"]), r["log_file"])


def _file(r: RowMapping) -> FileRecord:
    finished = utc(r["finished_at"])
    assert finished is not None
    return FileRecord(r["id"], r["run_id"], r["job_id"], r["attempt"], r["source_uri"], r["key"], r["status"],
                      r["size"], r["sha256"], r["seconds"], finished, list(r["problems"] or []),
                      bool(r["unchecked"]), list(r["destinations"] or []))


def _event(r: RowMapping) -> EventRecord:
    at = utc(r["at"])
    assert at is not None
    return EventRecord(r["id"], r["run_id"], r["job_id"], at, r["kind"], r["level"], r["message"], dict(r["fields"] or {}))


def _log_record(raw: bytes, run_id: str, job_id: str | None, minimum: int, needle: str | None,
                since: dt.datetime | None, until: dt.datetime | None) -> LogRecord | None:
    if run_id.encode() not in raw:
        return None
    if needle is not None and needle not in raw.decode("utf-8", "replace").lower():
        return None
    try:
        record = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.get("run_id") != run_id:
        return None
    if job_id is not None and record.get("job_id") != job_id:
        return None
    level = str(record.get("level", "info")).lower()
    if (LEVELS.index(level) if level in LEVELS else 1) < minimum:
        return None
    stamp = record.get("timestamp")
    if since is not None or until is not None:
        try:
            when = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
        except ValueError:
            return None
        when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
        if (since is not None and when < since) or (until is not None and when >= until):
            return None
    fields = {k: v for k, v in record.items() if k not in ("timestamp", "level", "event", "job_id")}
    return LogRecord(stamp, level, str(record.get("event", "")), record.get("job_id"), fields)
