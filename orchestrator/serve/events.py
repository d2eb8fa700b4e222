"""The in-process event bus of a run started by ``serve``: what ``/api/v1/runs/{id}/events`` streams.

:class:`RunEvents` is a run observer (:mod:`orchestrator.run_observer`) that keeps the run's live
state (each job's status, files by status, bytes, error; the last progress) and hands every
change to its subscribers. A subscriber gets that state first (a ``snapshot`` event), then
each event as it happens, in order, with nothing lost in between: the snapshot is taken and
the subscriber added under the same lock the events are published under.

Events (the SSE ``event:`` name, then its JSON ``data``):

==================  ===============================================================================
``snapshot``        ``run_id``, ``status``, ``jobs`` (job_id, service_id, status, files, bytes,
                    error), ``progress``; the first event of every stream
``progress``        the run's counters (``jobs_queued`` ... ``files_per_s``), every ``refresh_s``
``job_started``     ``job_id``
``file``            a file's outcome: ``job_id``, ``source_uri``, ``key``, ``status``, ``size``
``job_finished``    ``job_id``, ``status``, ``files``, ``bytes``, ``seconds``, ``error``
``error``           something went wrong: ``job_id`` (None: the run's), ``kind``, ``message``
``run_finished``    ``run_id``, ``status``, ``exit_code``, ``error``: the last event of a stream
==================  ===============================================================================

Subscribers are asyncio queues fed from the run's threads through their event loop
(``call_soon_threadsafe``): a publisher never waits. A subscriber that falls more than
``MAX_BACKLOG`` events behind misses ``file`` and ``progress`` events (never the others) until it
catches up.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from common.manifest import FILE_STATUSES
from orchestrator.run_observer import RunObserver, RunView

if TYPE_CHECKING:
    import datetime as dt

    from common.manifest import ManifestEntry
    from orchestrator.job_executor import RunOutcome
    from orchestrator.job_runner import JobResult
    from orchestrator.run_stats import StatsSnapshot

__all__ = ["FINAL", "RunEvents", "ServerEvent", "Subscription"]

MAX_BACKLOG = 5000
FINAL = "run_finished"
_SHEDDABLE = frozenset({"file", "progress"})


@dataclass(frozen=True)
class ServerEvent:
    kind: str
    data: Mapping[str, Any]


@dataclass
class _Job:
    job_id: str
    service_id: str
    status: str = "queued"
    attempt: int = 0
    files: Counter[str] = field(default_factory=Counter)
    bytes: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "service_id": self.service_id, "status": self.status,
                "files": {s: self.files.get(s, 0) for s in FILE_STATUSES}, "bytes": self.bytes, "error": self.error}


class Subscription:
    """One stream's queue; read with ``await next_event()``."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[ServerEvent] = asyncio.Queue()

    def offer(self, event: ServerEvent) -> None:
        if event.kind in _SHEDDABLE and self.queue.qsize() > MAX_BACKLOG:
            return
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def next_event(self) -> ServerEvent:
        return await self.queue.get()


class RunEvents(RunObserver):
    """The live state and subscribers of one run (see the module docstring)."""

    def __init__(self, run_id: str, jobs: Mapping[str, str]) -> None:
        """``jobs``: job_id -> service_id, in batch order."""
        self.run_id = run_id
        self.status = "queued"
        self._jobs = {job_id: _Job(job_id, service_id) for job_id, service_id in jobs.items()}
        self._progress: dict[str, Any] = {}
        self._subscribers: set[Subscription] = set()
        self._lock = threading.Lock()
        self.view: RunView | None = None
        self.final: ServerEvent | None = None

    # ------------------------------------------------------------------ subscribers

    def subscribe(self, loop: asyncio.AbstractEventLoop) -> tuple[ServerEvent, Subscription | None]:
        """The snapshot and a subscription to what follows; after the run's end, its final event
        and None."""
        with self._lock:
            if self.final is not None:
                return self.final, None
            subscription = Subscription(loop)
            self._subscribers.add(subscription)
            return ServerEvent("snapshot", self._snapshot()), subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            self._subscribers.discard(subscription)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "jobs": [j.to_dict() for j in self._jobs.values()],
                "progress": dict(self._progress)}

    def _publish(self, kind: str, data: Mapping[str, Any]) -> None:
        """Called with the lock held."""
        event = ServerEvent(kind, data)
        for subscription in self._subscribers:
            subscription.offer(event)

    # ------------------------------------------------------------------ what the run manager says

    def progress(self, stats: StatsSnapshot) -> None:
        with self._lock:
            self._progress = stats.to_dict()
            self._publish("progress", self._progress)

    def error(self, message: str, kind: str = "run_error", job_id: str | None = None) -> None:
        with self._lock:
            self._publish("error", {"job_id": job_id, "kind": kind, "message": message})

    def finish(self, status: str, exit_code: int | None, error: str | None = None) -> None:
        """The run is over (its history written): the final event; every stream ends."""
        with self._lock:
            self.status = status
            self.final = ServerEvent(FINAL, {"run_id": self.run_id, "status": status, "exit_code": exit_code,
                                             "error": error, "jobs": [j.to_dict() for j in self._jobs.values()]})
            self._publish(self.final.kind, self.final.data)
            self._subscribers.clear()

    # ------------------------------------------------------------------ observer calls (run threads)

    def run_started(self, run: RunView) -> None:
        with self._lock:
            self.view = run
            self.status = "running"
            self._publish("progress", {"status": "running"})

    def job_started(self, job_id: str, at: dt.datetime) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.status = "running"
            self._publish("job_started", {"job_id": job_id})

    def file_done(self, job_id: str, attempt: int, entry: ManifestEntry, seconds: float | None) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                if attempt != job.attempt:  # a fallback source starts the job's counts again
                    job.attempt, job.files, job.bytes = attempt, Counter(), 0
                job.files[entry.status] += 1
                if entry.status == "uploaded":
                    job.bytes += entry.size
            self._publish("file", {"job_id": job_id, "source_uri": entry.source_uri, "key": entry.key,
                                   "status": entry.status, "size": entry.size})

    def event(self, kind: str, job_id: str | None, level: str, message: str, fields: Mapping[str, Any]) -> None:
        if level in ("error", "critical") or kind in ("source_failed", "run_stopping"):
            with self._lock:
                self._publish("error", {"job_id": job_id, "kind": kind, "message": message})

    def job_finished(self, result: JobResult) -> None:
        with self._lock:
            job = self._jobs.get(result.job_id)
            if job is not None:
                job.status, job.files, job.bytes, job.error = result.status, Counter(result.files), result.bytes, \
                    result.error
            self._publish("job_finished", {"job_id": result.job_id, "status": result.status,
                                           "files": {s: result.files.get(s, 0) for s in FILE_STATUSES},
                                           "bytes": result.bytes, "seconds": round(result.seconds, 3),
                                           "error": result.error})

    def run_finished(self, outcome: RunOutcome) -> None:
        """Nothing yet: the final event waits for the history's last rows (:meth:`finish`)."""
