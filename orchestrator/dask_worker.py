"""The worker side of ``--executor dask...``: one job run as a Dask task.

A task carries a :class:`RemoteJob`: the job's typed config (``JobSpec``, ``ServiceConfig``),
the hosts it was admitted on and the run's context (:class:`RemoteRun`: run id and start,
the registry's folder, the host caps, the log level). Nothing else: a secret of the
registry travels as its ``${VAR}`` text and is read again from the worker's own
environment when the task is unpickled (:class:`~common.secret.Secret`), so workers need
the same registry files and credentials, never the client's values.

Each worker process keeps one :class:`_WorkerRun` per run it serves, made by the run's
first task there and ended by the client (:func:`end_worker_run`): its own state
directory (``$MODULE_SYSTEM_STATE_DIR`` of the worker, else ``temp`` in its working
directory, as for a run; not Dask's local directory, which a worker removes when it ends) with ``work/<run_id>-<worker>/`` (the jobs' temp files),
``uploads/`` (resume state) and ``logs/<run_id>/`` (the jobs' log files, written where
they run), its destinations (files go from the worker straight to them), clients and
host limiters. The run's key claims, per-host connection caps and incremental-state
locks are the cluster's (:mod:`orchestrator.dask_claims`, :mod:`orchestrator.dask_hosts`,
``distributed.Lock``).

Progress and log records go back to the client while the job runs, as Dask events on the
run's topic (``worker.log_event``): ``[kind, job_id, epoch, ...]`` with kind ``moved``
(job state), ``file`` (a file's status and size), ``retry`` or ``log`` (a JSON log line).
The client applies them to the run's statistics, log files and display
(:class:`orchestrator.dask_executor.ClientRelay`). The task returns the job's result and
how many events it sent, so that the client knows when it has them all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from distributed import Lock, get_worker
from distributed.worker import thread_state

from common.config_model import JobSpec, ServiceConfig
from common.logger import configure_worker_logging
from common.plugins import default_catalog
from orchestrator.dask_claims import ClusterClaims
from orchestrator.dask_hosts import ClusterHostLimiters
from orchestrator.destination_pool import DestinationPool
from orchestrator.job_executor import run_bound
from orchestrator.job_runner import JobResult, RunContext
from orchestrator.run_stats import JobStatus, RunStats
from orchestrator.state_dir import RunWorkdir

__all__ = ["RemoteJob", "RemoteOutcome", "RemoteRun", "end_worker_run", "run_remote_job", "stop_worker_run"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RemoteRun:
    """What a worker needs of the run, besides the job (picklable, no secrets)."""

    run_id: str
    started_at: dt.datetime
    base_dir: str
    """The registry's folder (relative paths of the registry, e.g. a local destination's)."""
    upload_threads: int
    caps: Mapping[str, int]
    """Per-host connection caps, as the client declared them."""
    log_level: int
    topic: str
    """The Dask event topic the client listens on."""


@dataclass(frozen=True)
class RemoteJob:
    run: RemoteRun
    job: JobSpec
    service: ServiceConfig
    hosts: tuple[str, ...]
    """The hosts the client admitted the job on (a slot of each is the job's own)."""


@dataclass(frozen=True)
class RemoteOutcome:
    result: JobResult
    epoch: int
    """Which start of the job this was (a later start has a higher one: after a worker was lost)."""
    events: int
    """Events this start sent to the client (its statistics and log records)."""


class JobRelay(RunStats):
    """A job's statistics, sent to the client as they happen (the run's RunStats is there)."""

    def __init__(self, job_id: str, epoch: int, send: Callable[[list[Any]], None]) -> None:
        super().__init__(0)
        self.job_id, self.epoch = job_id, epoch
        self._send = send
        self._count_lock = threading.Lock()
        self.sent = 0

    def send(self, kind: str, *fields: Any) -> None:
        with self._count_lock:
            self.sent += 1
        self._send([kind, self.job_id, self.epoch, *fields])

    def job_moved(self, old: JobStatus, new: JobStatus) -> None:
        self.send("moved", old, new)

    def file_done(self, status: str, size: int) -> None:
        self.send("file", status, size)

    def retried(self) -> None:
        self.send("retry")


class _Forward(logging.Handler):
    """Sends each of our records (a JSON line) to the client of its run, through its job's relay."""

    def emit(self, record: logging.LogRecord) -> None:
        event = record.msg
        if not isinstance(event, dict):
            return
        state = _runs.get(str(event.get("run_id")))
        if state is None:
            return
        try:
            line = self.format(record)
            relay = state.relays.get(str(event.get("job_id")))
            if relay is not None:
                relay.send("log", record.levelno, record.name, line)
            else:  # a record of the run outside any job (closing its clients)
                state.send(["log", "", 0, record.levelno, record.name, line])
        except Exception:  # noqa: BLE001 - a log record must not fail the job
            self.handleError(record)


class _WorkerRun:
    """One run's state in one worker process."""

    def __init__(self, remote: RemoteRun, worker: Any) -> None:
        self.remote, self.worker = remote, worker
        root = Path(os.environ.get("MODULE_SYSTEM_STATE_DIR") or "temp")
        tag = "".join(c if c.isalnum() else "-" for c in str(worker.name))
        self.workdir = RunWorkdir.claim(root / "work", f"{remote.run_id}-w{tag}")
        log_dir = root / "logs" / remote.run_id
        router = _worker_router(log_dir, remote.log_level)
        run_id = remote.run_id
        self.context = RunContext(
            run_id=run_id, started_at=remote.started_at, catalog=default_catalog(),
            destinations=DestinationPool(remote.upload_threads, root / "uploads", Path(remote.base_dir)),
            stats=RunStats(0), router=router, log_dir=log_dir, temp_root=self.workdir.path,  # type: ignore[arg-type]
            shared_lock=lambda name: Lock(f"module_system/{run_id}/{name}"),
        )
        self.context.limiters = ClusterHostLimiters(run_id, self.context.stop, worker.scheduler, worker.loop,
                                                    remote.caps)
        self.relays: dict[str, JobRelay] = {}
        self.running: list[RunContext] = []
        self.lock = threading.Lock()

    def send(self, message: list[Any]) -> None:
        self.worker.log_event(self.remote.topic, message)

    def stop(self, reason: str) -> None:
        with self.lock:
            contexts = [self.context, *self.running]
        for ctx in contexts:
            ctx.stop_reason = reason
        for ctx in contexts:
            ctx.stop.set()

    def close(self) -> None:
        limiters = self.context.limiters
        if isinstance(limiters, ClusterHostLimiters):
            limiters.close(forget=False)  # the client removes the run's semaphores
        self.context.destinations.close()
        self.context.resources.close()
        self.workdir.release()


_runs: dict[str, _WorkerRun] = {}
_stops: dict[str, str] = {}
"""Runs stopped (and why) while or before this process had their state: a stop that reaches a
worker before the run's first task here made its state still stops the jobs that start here."""
_runs_lock = threading.Lock()
_making = threading.Lock()
_logging: dict[str, Any] = {}


def _worker_router(log_dir: Path, level: int) -> Any:
    """This process's job log router, logging set up on first use (records go to the job's
    file here and to the client); a later run's jobs write under their own run's log dir."""
    with _runs_lock:
        router = _logging.get("router")
        if router is None:
            router = _logging["router"] = configure_worker_logging(log_dir, level, _Forward())
        return router


def _state(remote: RemoteRun, worker: Any) -> _WorkerRun:
    """The run's state in this process, made by its first task here (the others wait for it)."""
    with _making:
        with _runs_lock:
            state = _runs.get(remote.run_id)
        if state is None:
            state = _WorkerRun(remote, worker)
            with _runs_lock:
                _runs[remote.run_id] = state
                reason = _stops.get(remote.run_id)
            if reason is not None:
                state.stop(reason)
    return state


def run_remote_job(task: RemoteJob) -> RemoteOutcome:
    """The Dask task: run one job on this worker; returns its result (never raises for the job's
    own failures: those are in the result, as with threads)."""
    worker = get_worker()
    state = _state(task.run, worker)
    job = task.job
    epoch = _epoch(worker)
    relay = JobRelay(job.job_id, epoch, state.send)
    ctx = dataclasses.replace(state.context, stats=relay, claims=ClusterClaims(worker, task.run.run_id, epoch))
    with state.lock:
        state.relays[job.job_id] = relay
        state.running.append(ctx)
    try:
        result = run_bound(ctx, job, task.service, task.hosts, worker=str(worker.address))
    finally:
        with state.lock:
            state.relays.pop(job.job_id, None)
            state.running.remove(ctx)
    return RemoteOutcome(result, epoch, relay.sent)


def _epoch(worker: Any) -> int:
    """Which start of the task this is: the scheduler's run id of the task (it numbers every
    execution it sends to a worker, in increasing order), plus one. A job run again after its
    worker was lost has a higher one than its lost start."""
    state = worker.state.tasks.get(thread_state.key)
    if state is None or state.run_id < 0:
        raise RuntimeError(f"task {thread_state.key!r} has no run id on worker {worker.address}")
    return int(state.run_id) + 1


def stop_worker_run(run_id: str, reason: str) -> bool:
    """(``client.run`` on every worker) The run is stopping: its jobs here stop at their next file
    boundary and jobs that start later do not run."""
    with _runs_lock:
        state = _runs.get(run_id)
        _stops[run_id] = reason
    if state is not None:
        state.stop(reason)
    return state is not None


def end_worker_run(run_id: str) -> bool:
    """(``client.run`` on every worker) The run ended: close its destinations and clients here
    and remove its temp directory."""
    with _runs_lock:
        state = _runs.pop(run_id, None)
        _stops.pop(run_id, None)
    if state is not None:
        state.stop("interrupted")  # a job abandoned by the client stops at its next file boundary
        state.close()
    return state is not None
