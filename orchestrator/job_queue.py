"""The run's jobs in start order, taken by the workers themselves.

Each worker thread loops: :meth:`JobQueue.take` the next job it may start, run it,
:meth:`JobQueue.done`. No dispatcher thread hands jobs out, so a finished job wakes
nobody (a job costs one lock round, not a future, a waiter and a wake-up of the main
thread).

Start order is the batch's (higher ``priority`` first, then file order). A job whose hosts
have no free slot (:class:`~common.host_limiter.HostLimiters`) is set aside, grouped by
its hosts, and the jobs behind it may start first; it starts as soon as a slot frees,
before any later job. Set-aside jobs never hold a worker, so a cap lower than the number
of workers cannot deadlock. With ``--executor dask...`` the slots are the cluster's
(:mod:`orchestrator.dask_hosts`): a slot seen free may be taken by a worker before this
queue takes it, and the job then waits for the next.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence

from common.config_model import JobSpec
from common.host_limiter import HostLimiters

__all__ = ["JobQueue"]


class JobQueue:
    def __init__(self, jobs: Sequence[JobSpec], hosts: Mapping[str, tuple[str, ...]], slots: HostLimiters,
                 stop: threading.Event) -> None:
        self._pending = deque(jobs)
        self._rank = {job.job_id: index for index, job in enumerate(jobs)}
        self._hosts = hosts
        self._slots = slots
        self._stop = stop
        self._blocked: dict[tuple[str, ...], deque[JobSpec]] = {}
        self._cond = threading.Condition()

    def take(self) -> JobSpec | None:
        """The next job to run (its host slots taken), waiting for a slot if need be; None
        once nothing is left to start or the run is stopping."""
        with self._cond:
            while not self._stop.is_set():
                job = self._next()
                if job is not None:
                    return job
                if not self._pending and not self._blocked:
                    return None
                self._cond.wait(0.5)  # a job finishing frees a slot; the timeout notices a stop
            return None

    def done(self, job: JobSpec) -> None:
        """``job`` ended: its slots are free for the jobs set aside."""
        with self._cond:
            self._slots.release(self._hosts[job.job_id])
            if self._blocked:
                self._cond.notify_all()

    def drain(self) -> list[JobSpec]:
        """The jobs never started (after a stop), in start order; the queue is empty after."""
        with self._cond:
            left = [job for group in self._blocked.values() for job in group] + list(self._pending)
            self._blocked.clear()
            self._pending.clear()
        return sorted(left, key=lambda job: self._rank[job.job_id])

    def _next(self) -> JobSpec | None:
        best: tuple[str, ...] | None = None  # the earliest set-aside job whose hosts have a slot now
        for hosts, group in self._blocked.items():
            if (best is None or self._rank[group[0].job_id] < self._rank[self._blocked[best][0].job_id]) \
                    and self._slots.available(hosts):
                best = hosts
        limit = self._rank[self._blocked[best][0].job_id] if best is not None else len(self._rank)
        while self._pending and self._rank[self._pending[0].job_id] < limit:
            job = self._pending.popleft()
            hosts = self._hosts[job.job_id]
            if self._slots.try_acquire(hosts):
                return job
            self._blocked.setdefault(hosts, deque()).append(job)
        if best is None:
            return None
        if not self._slots.try_acquire(best):  # taken meanwhile by another process (a cap shared across Dask workers)
            return None
        group = self._blocked[best]
        job = group.popleft()
        if not group:
            del self._blocked[best]
        return job
