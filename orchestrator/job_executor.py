"""The job executor: a batch in, every job run to a final state, a report out.

Jobs wait in one queue ordered by priority (higher first, file order among equals).
``max_workers`` worker threads (daemon threads, :mod:`orchestrator.worker_threads`) each take the next job from
the :class:`~orchestrator.job_queue.JobQueue`, run it and take the next: a job starts
only when every host it connects to has a free connection slot
(:class:`~common.host_limiter.HostLimiters`, the run's one limiter per host, which the jobs'
parallel transfers share too); the first such job in queue order goes, so priorities hold,
and a job waiting for a busy host never holds a worker. This
thread only shows progress every ``refresh_s``. Where an admitted job runs is the
run's :class:`~orchestrator.executors.JobExecutor` (``--executor``): in the worker
thread itself, or on a Dask cluster while the worker thread waits for it. Each job moves
``queued -> running -> succeeded | failed | timed_out | cancelled``.

``monitor_duration`` (seconds, 0 = none) sets a deadline: then queued jobs are not
started and running ones stop at their next file boundary; all count as ``timed_out``.
:meth:`BatchRun.interrupt` (SIGINT/SIGTERM in the CLI) does the same with
``cancelled``. A job still running ``STOP_GRACE_S`` seconds after a stop is abandoned
(:mod:`orchestrator.worker_threads`). Context variables do not follow a task into a pool thread, so each
worker binds ``run_id``, ``job_id``, ``service_id``, ``module`` and ``thread`` itself
and clears them when the job ends.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from common.config_model import Batch, JobSpec, Registry, ServiceConfig
from common.logger import job_log_name
from common.plugins import ModuleCatalog, default_catalog
from orchestrator.destination_pool import DestinationPool
from orchestrator.executors import JobExecutor, ThreadJobs
from orchestrator.exit_codes import ExitCode
from orchestrator.job_queue import JobQueue
from orchestrator.job_runner import (
    JobResult,
    JobRunner,
    RunContext,
    job_log_path,
    not_started,
)
from orchestrator.run_observer import PlannedJob, RunObserver, RunView
from orchestrator.run_stats import RunStats, StatsSnapshot
from orchestrator.state_dir import RunWorkdir
from orchestrator.worker_threads import STOP_GRACE_S, run_workers

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RunOptions:
    max_workers: int = 20
    monitor_duration: float = 0
    log_dir: Path = Path("temp/logs")
    temp_dir: Path = Path("temp")
    """The state directory (``--state-dir``): ``work/<run_id>/`` and ``uploads/`` go under it."""
    refresh_s: float = 0.5
    """How often the progress callback is called."""
    rejected_ok: bool = False
    """Rejected files alone do not make the exit code 1 (``--rejected-ok``); they are still counted."""


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    started_at: dt.datetime
    finished_at: dt.datetime
    results: tuple[JobResult, ...]
    """In batch file order."""
    interrupted: bool
    stats: StatsSnapshot
    rejected_ok: bool = False
    """Rejected files alone leave the exit code 0 (:attr:`RunOptions.rejected_ok`)."""

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        ok = all(r.status == "succeeded" and (self.rejected_ok or r.files.get("rejected", 0) == 0)
                 for r in self.results)
        return ExitCode.OK if ok else ExitCode.JOBS_FAILED


def _upload_threads(registry: Registry, options: RunOptions) -> int:
    """Uploads that may be in flight at once: every worker's job with all its transfers
    (the destination client keeps that many connections, capped)."""
    transfers = max((service.transfers for service in registry.services.values()), default=1)
    return min(256, options.max_workers * transfers)


def destination_pool(registry: Registry, options: RunOptions) -> DestinationPool:
    """The run's destinations, made on first use (the pre-flight check is the first)."""
    return DestinationPool(_upload_threads(registry, options), options.temp_dir / "uploads",
                           registry.path.resolve().parent)


def new_run_id(now: dt.datetime) -> str:
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


class BatchRun:
    """One run of one batch. Create, then :meth:`execute` (blocking).

    ``observer`` (:mod:`orchestrator.run_observer`: the history, the metrics) is told the run's
    start and end, every job's start and final result, every file outcome and notable event."""

    def __init__(self, registry: Registry, batch: Batch, options: RunOptions, router: object,
                 catalog: ModuleCatalog | None = None, run_id: str | None = None,
                 destinations: DestinationPool | None = None, executor: JobExecutor | None = None,
                 observer: RunObserver | None = None) -> None:
        started = dt.datetime.now(dt.timezone.utc)
        self.registry, self.batch, self.options = registry, batch, options
        run_id = run_id or new_run_id(started)
        self.workdir = RunWorkdir.claim(options.temp_dir / "work", run_id)  # this run's own, removed at the end
        temp_root = self.workdir.path
        self.context = RunContext(
            run_id=run_id, started_at=started, catalog=catalog or default_catalog(),
            destinations=destinations or destination_pool(registry, options),
            stats=RunStats(len(batch.jobs)),
            router=router, log_dir=options.log_dir, temp_root=temp_root,  # type: ignore[arg-type]
            observer=observer or RunObserver(),
        )
        self.executor: JobExecutor = executor or ThreadJobs()
        """Where the admitted jobs run (``--executor``, :mod:`orchestrator.executors`)."""
        self.context.limiters = self.executor.host_limiters(run_id, self.context.stop)
        self.interrupted = False
        self.slots = self.context.limiters
        self._job_hosts: dict[str, tuple[str, ...]] = {}

    @property
    def run_id(self) -> str:
        return self.context.run_id

    def interrupt(self) -> None:
        """Stop: nothing new starts, running jobs stop at the next file boundary."""
        self.interrupted = True
        self._stop("interrupted")

    def _stop(self, reason: str) -> None:
        if not self.context.stop.is_set():
            self.context.stop_reason = reason
            self.context.stop.set()
            log.warning("run_stopping", reason=reason)
            self.context.observer.event("run_stopping", None, "warning", f"run stopping: {reason}", {"reason": reason})

    def execute(self, on_progress: Callable[[StatsSnapshot], None] | None = None) -> RunOutcome:
        ctx = self.context
        queue = sorted(self.batch.jobs, key=lambda j: (-j.priority, j.index))
        hosts = {job.job_id: self._hosts(job) for job in queue}
        structlog.contextvars.bind_contextvars(run_id=ctx.run_id)
        log.info("run_started", jobs=len(queue), max_workers=self.options.max_workers,
                 batch=str(self.batch.path), registry=str(self.registry.path))
        ctx.observer.run_started(self._view())
        timer = None
        if self.options.monitor_duration > 0:
            timer = threading.Timer(self.options.monitor_duration, self._stop, args=("timeout",))
            timer.daemon = True
            timer.start()
        results: dict[str, JobResult] = {}
        jobs = JobQueue(queue, hosts, self.slots, ctx.stop)
        executor = self.executor

        def work() -> None:
            while (job := jobs.take()) is not None:
                try:
                    self._finished(results, executor.run_job(self, job))  # never raises
                finally:
                    jobs.done(job)

        try:
            executor.start_run(self)
            workers = min(self.options.max_workers, len(queue))
            abandoned = run_workers(workers, work, ctx.stop, self.options.refresh_s,
                                    lambda: on_progress(ctx.stats.snapshot()) if on_progress is not None else None)
            for job in jobs.drain():
                self._finished(results, self._not_started(job))
            if abandoned:  # still running STOP_GRACE_S after the stop: the run ends without them
                for job in self.batch.jobs:
                    if job.job_id not in results:
                        self._finished(results, self._abandoned(job))
        finally:
            if timer is not None:
                timer.cancel()
            executor.end_run(self)
            ctx.destinations.close()
            ctx.resources.close()
            self.workdir.release()
        outcome = RunOutcome(ctx.run_id, ctx.started_at, dt.datetime.now(dt.timezone.utc),
                             tuple(results[j.job_id] for j in self.batch.jobs), self.interrupted,
                             ctx.stats.snapshot(), self.options.rejected_ok)
        ctx.observer.run_finished(outcome)
        log.info("run_finished", exit_code=int(outcome.exit_code), **outcome.stats.to_dict())
        structlog.contextvars.clear_contextvars()
        return outcome

    def _finished(self, results: dict[str, JobResult], result: JobResult) -> None:
        """Every job's final result passes here, once (also one that never started)."""
        results[result.job_id] = result
        self.context.observer.job_finished(result)

    def _view(self) -> RunView:
        ctx = self.context
        jobs = []
        for position, job in enumerate(self.batch.jobs):
            service = self.registry.services[job.service_id]
            jobs.append(PlannedJob(job.job_id, job.service_id, service.type, job.priority, position,
                                   job_log_name(job.job_id, service.service_id, service.type)))
        return RunView(ctx.run_id, ctx.started_at, self.batch.path, self.registry.path, self.options.log_dir,
                       self.options.max_workers, tuple(jobs), ctx.stats, ctx.limiters)

    def _hosts(self, job: JobSpec) -> tuple[str, ...]:
        """Every host the job may connect to (its sources and fallbacks), each capped as declared."""
        service = self.registry.services[job.service_id]
        cls = self.context.catalog.load(service.type)
        hosts = tuple(dict.fromkeys(h for source in job.sources for h in cls.hosts(source)))
        for host in hosts:
            self.slots.declare(host, service.max_connections, service.requests_per_s, service.delay_s)
        self._job_hosts[job.job_id] = hosts
        return hosts

    def _not_started(self, job: JobSpec) -> JobResult:
        return stopped_before_start(self.context, job)

    def _abandoned(self, job: JobSpec) -> JobResult:
        status = self.context.stopped_status()
        self.context.stats.job_moved("running", status)
        return not_started(job, status, f"stopped: still running {STOP_GRACE_S:g} s after the stop; "
                                        "abandoned (its manifest may not be written)")

    def run_here(self, job: JobSpec) -> JobResult:
        """Run ``job`` in this thread (``--executor threads``); never raises."""
        return run_bound(self.context, job, self.registry.services[job.service_id], self._job_hosts.get(job.job_id, ()))


def run_bound(ctx: RunContext, job: JobSpec, service: ServiceConfig, hosts: tuple[str, ...],
              **bind: str) -> JobResult:
    """Run ``job`` in this thread with the log context bound (``run_id``, ``job_id``, ``service_id``,
    ``module``, ``thread`` and ``bind``) and its log file open; never raises. Not started (and
    counted so) when the run is already stopping."""
    if ctx.stop.is_set():
        return stopped_before_start(ctx, job)
    structlog.contextvars.bind_contextvars(
        run_id=ctx.run_id, job_id=job.job_id, service_id=job.service_id, module=service.type,
        thread=threading.current_thread().name, **bind,
    )
    try:
        try:
            ctx.router.open(job.job_id, job_log_path(ctx, job, service))
            runner = JobRunner(ctx, job, service, hosts)
        except Exception as exc:  # noqa: BLE001 - e.g. a log file or destination client that cannot be made
            log.error("job_setup_failed", error=str(exc)[:300])
            ctx.stats.job_moved("queued", "failed")
            return not_started(job, "failed", f"setup failed: {type(exc).__name__}: {str(exc)[:300]}")
        return runner.run_job()
    finally:
        ctx.router.close_job(job.job_id)
        structlog.contextvars.clear_contextvars()


def stopped_before_start(ctx: RunContext, job: JobSpec) -> JobResult:
    """The result of a job the stop caught before it started (counted ``queued`` -> stopped)."""
    status = ctx.stopped_status()
    ctx.stats.job_moved("queued", status)
    reason = "monitor duration reached" if status == "timed_out" else "run interrupted"
    return not_started(job, status, f"not started: {reason}")
