"""What a run tells those who watch it: the history recorder, the metrics, and whatever comes next.

One interface, :class:`RunObserver`, called at the few places where the engine decides something:
the executor when the run and each job start and end (every job ends through it, also one that
never started), the job runner when a file's outcome is recorded (``JobRunner._record``, the one
place every manifest entry passes) and for the notable events (retries, source failures,
fallbacks, key collisions, duplicates, stops). Observers never change the run: they copy what
they are told. :class:`ObserverGroup` fans out to several, and a failing observer is logged
once (``run_observer_failed``) and then left out, so it can never fail a run.

Calls come from the executor's thread and from every worker and transfer lane thread at once:
an observer is thread-safe and quick (queue it, count it; never wait for I/O in a call).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from common.host_limiter import HostLimiters
    from common.manifest import ManifestEntry
    from orchestrator.job_executor import RunOutcome
    from orchestrator.job_runner import JobResult
    from orchestrator.run_stats import RunStats

__all__ = ["ObserverGroup", "PlannedJob", "RunObserver", "RunView"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class PlannedJob:
    """A job of the batch as the run starts: all queued."""

    job_id: str
    service_id: str
    module: str
    priority: int
    position: int
    """Its place in the batch file, from 0."""
    log_file: str
    """Its log file's name under the run's log dir."""


@dataclass(frozen=True)
class RunView:
    """The run as it starts, with its live counters (read them, never change them)."""

    run_id: str
    started_at: dt.datetime
    batch_file: Path
    registry_file: Path
    log_dir: Path
    max_workers: int
    jobs: Sequence[PlannedJob]
    stats: RunStats
    """Jobs by state (queued, running: the queue depth and busy workers), files, bytes, retries."""
    limiters: HostLimiters
    """Per-host connection slots (in use, cap)."""


class RunObserver:
    """The observer interface; every method does nothing here, so an observer overrides what it needs."""

    def run_started(self, run: RunView) -> None:
        """The run begins (before any job starts)."""

    def job_started(self, job_id: str, at: dt.datetime) -> None:
        """A worker took the job (it was ``queued``, it is ``running``)."""

    def file_done(self, job_id: str, attempt: int, entry: ManifestEntry, seconds: float | None) -> None:
        """A file's outcome in source attempt ``attempt`` of the job, as its manifest will hold it;
        ``seconds`` from its download's start (None when it was not transferred)."""

    def event(self, kind: str, job_id: str | None, level: str, message: str, fields: Mapping[str, Any]) -> None:
        """Something worth keeping happened: ``kind`` is the log event's name (``retrying``,
        ``source_failed``, ``fallback_used``, ``file_key_refused``, ``file_duplicate_uri``,
        ``run_stopping``); ``job_id`` None for the run's own."""

    def job_finished(self, result: JobResult) -> None:
        """The job's final result, exactly as the run report has it."""

    def run_finished(self, outcome: RunOutcome) -> None:
        """The run is over (every job final); called once, before the report is written."""


class ObserverGroup(RunObserver):
    """Several observers as one; an observer that raises is logged once and dropped."""

    def __init__(self, observers: Sequence[RunObserver] = ()) -> None:
        self._observers = list(observers)
        self._lock = threading.Lock()

    def add(self, observer: RunObserver) -> None:
        with self._lock:
            self._observers.append(observer)

    def _each(self, name: str, *args: Any) -> None:
        for observer in tuple(self._observers):
            try:
                getattr(observer, name)(*args)
            except Exception as exc:  # noqa: BLE001 - watching a run must never fail it
                with self._lock:
                    if observer not in self._observers:
                        continue
                    self._observers.remove(observer)
                log.warning("run_observer_failed", observer=type(observer).__name__, call=name,
                            error=f"{type(exc).__name__}: {str(exc)[:200]}")

    def run_started(self, run: RunView) -> None:
        self._each("run_started", run)

    def job_started(self, job_id: str, at: dt.datetime) -> None:
        self._each("job_started", job_id, at)

    def file_done(self, job_id: str, attempt: int, entry: ManifestEntry, seconds: float | None) -> None:
        self._each("file_done", job_id, attempt, entry, seconds)

    def event(self, kind: str, job_id: str | None, level: str, message: str, fields: Mapping[str, Any]) -> None:
        self._each("event", kind, job_id, level, message, fields)

    def job_finished(self, result: JobResult) -> None:
        self._each("job_finished", result)

    def run_finished(self, outcome: RunOutcome) -> None:
        self._each("run_finished", outcome)
