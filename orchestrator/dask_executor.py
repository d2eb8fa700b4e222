"""``--executor dask-local`` and ``--executor dask://HOST:PORT``: the run's jobs as Dask tasks.

The run is the same :class:`~orchestrator.job_executor.BatchRun` as with threads: its
``--max-workers`` threads take the jobs in priority order, each admitted on its hosts;
here a thread submits its job to the cluster (:func:`orchestrator.dask_worker.run_remote_job`)
and waits for the result, so at most ``--max-workers`` jobs are on the cluster at once and
the report, failed-jobs file and exit code are made from the same results.

* **Connection.** ``dask-local`` starts a ``LocalCluster`` of worker processes for the run
  (``$MODULE_SYSTEM_DASK_WORKERS`` of them, default 2, threads enough for ``--max-workers``);
  ``dask://HOST:PORT`` connects to a running scheduler. A scheduler that cannot be reached,
  or that cannot load this package, stops the run before it starts (exit 2).
* **Secrets.** A job travels as its typed config; its secrets as their ``${VAR}`` text
  (:class:`~common.secret.Secret`), read on the worker from its environment. A secret
  written into the registry as it is would travel as its value: such a run is refused
  (:meth:`DaskJobs.check`, exit 2).
* **Live progress and logs.** Workers send each job's state changes, files and log
  records as events on the run's topic; :class:`ClientRelay` applies them to the run's
  statistics (the live display) and replays the log records into the run's log dir
  (the executor log and each job's file), as if the jobs ran here.
* **A lost worker.** The scheduler runs its tasks again on another worker; the new start
  of the job (a new epoch) replaces the lost one's counts, and its keys are its own
  (:mod:`orchestrator.dask_claims`); landing is idempotent (same sha256: skipped), so its
  files land once. A job whose tasks killed ``distributed.scheduler.allowed-failures``
  workers fails.
* **Stop.** Ctrl-C, SIGTERM or ``--monitor-duration`` reach every worker (``client.run``):
  running jobs stop at their next file boundary, jobs not started do not run; what is
  still running ``STOP_GRACE_S`` later is abandoned and its future cancelled.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections import defaultdict
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from common.config_model import Batch, JobSpec, Registry
from common.exceptions import ConfigError
from common.host_limiter import HostLimiters
from common.logger import replay_record
from common.secret import Secret, has_environment_source, redact
from orchestrator.dask_claims import ClaimsPlugin
from orchestrator.dask_hosts import ClusterHostLimiters
from orchestrator.dask_worker import (
    RemoteJob,
    RemoteOutcome,
    RemoteRun,
    end_worker_run,
    run_remote_job,
    stop_worker_run,
)
from orchestrator.executors import ExecutorChoice
from orchestrator.job_runner import JobResult, job_log_path, not_started
from orchestrator.run_stats import RunStats

if TYPE_CHECKING:
    from orchestrator.job_executor import BatchRun

__all__ = ["ClientRelay", "DaskJobs"]

log = structlog.get_logger(__name__)

#: Seconds a finished job's last events may take to arrive after its result.
_SETTLE_S = 10.0


class DaskJobs:
    """A :class:`~orchestrator.executors.JobExecutor` on a Dask distributed cluster."""

    name = "dask"

    def __init__(self, choice: ExecutorChoice, max_workers: int) -> None:
        self.choice, self.max_workers = choice, max_workers
        self.client: Any = None
        self._cluster: Any = None
        self._futures: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._relay: ClientRelay | None = None
        self._remote: RemoteRun | None = None
        self._limiters: ClusterHostLimiters | None = None
        self._ended = threading.Event()

    def _connect(self) -> None:
        """Start the local cluster or connect to the scheduler; ConfigError when that fails."""
        from distributed import Client

        try:
            if self.choice.address is None:
                self._cluster = _local_cluster(self.max_workers)
                self.client = Client(self._cluster)
            else:
                self.client = Client(self.choice.address, timeout="5s")
        except (OSError, TimeoutError) as exc:
            self.close()
            raise ConfigError(f"--executor {self.choice}: cannot reach the Dask scheduler: "
                              f"{redact(str(exc)).splitlines()[0][:200]}") from None
        try:
            self.client.register_plugin(ClaimsPlugin())
        except Exception as exc:  # noqa: BLE001 - e.g. the scheduler cannot import this package
            self.close()
            raise ConfigError(f"--executor {self.choice}: the scheduler cannot hold the run's key claims "
                              f"({type(exc).__name__}: {redact(str(exc))[:200]}); run it from an installation "
                              "of module_system[distributed]") from None

    # ------------------------------------------------------------------ JobExecutor

    def check(self, registry: Registry, batch: Batch) -> None:
        """Refuse a job whose config holds a secret that is not read from the environment (it
        would be sent to the workers as its value); then connect to the cluster."""
        for job in batch.jobs:
            service = registry.services[job.service_id]
            places = [("source", s) for s in job.sources] + [
                (f"destination {d.name}", d.config) for d in service.destinations]
            for where, config in places:
                key = _literal_secret(config)
                if key is not None:
                    raise ConfigError(
                        f"{registry.path}: service '{service.service_id}': key '{key}' ({where}): a secret written "
                        f"into the registry is not sent to Dask workers; give it as ${{VAR}} and set VAR where "
                        f"the workers run (--executor {self.choice})", file=str(registry.path), key=key)
        self._connect()

    def host_limiters(self, run_id: str, stop: threading.Event) -> HostLimiters:
        self._limiters = ClusterHostLimiters(run_id, stop, self.client.scheduler, self.client.loop)
        return self._limiters

    def start_run(self, run: BatchRun) -> None:
        ctx = run.context
        self._ended.clear()
        self._remote = RemoteRun(
            run_id=ctx.run_id, started_at=ctx.started_at, base_dir=str(run.registry.path.resolve().parent),
            upload_threads=ctx.destinations.workers, caps=run.slots.caps(),
            log_level=logging.getLogger().getEffectiveLevel(), topic=f"module_system/{ctx.run_id}")
        self._relay = ClientRelay(ctx.stats, ctx.run_id)
        self.client.subscribe_topic(self._remote.topic, self._relay.receive)
        log.info("dask_run_started", executor=str(self.choice), scheduler=self.client.scheduler.address,
                 workers=len(self.client.scheduler_info().get("workers", {})))
        threading.Thread(target=self._stop_when_stopped, args=(run,), name="dask-stop", daemon=True).start()

    def run_job(self, run: BatchRun, job: JobSpec) -> JobResult:
        ctx = run.context
        if ctx.stop.is_set():
            return run._not_started(job)
        assert self._remote is not None and self._relay is not None, "start_run first"
        service = run.registry.services[job.service_id]
        structlog.contextvars.bind_contextvars(run_id=ctx.run_id, job_id=job.job_id, service_id=job.service_id,
                                               module=service.type, thread=threading.current_thread().name)
        try:
            ctx.router.open(job.job_id, job_log_path(ctx, job, service))
            return self._submit_and_wait(run, job, RemoteJob(self._remote, job, service,
                                                            run._job_hosts.get(job.job_id, ())))
        except Exception as exc:  # noqa: BLE001 - run_job never raises
            log.error("job_setup_failed", error=redact(str(exc))[:300])
            self._relay.forget(job.job_id)
            ctx.stats.job_moved("queued", "failed")
            return not_started(job, "failed", f"setup failed: {type(exc).__name__}: {redact(str(exc))[:300]}")
        finally:
            ctx.router.close_job(job.job_id)
            structlog.contextvars.clear_contextvars()

    def _submit_and_wait(self, run: BatchRun, job: JobSpec, task: RemoteJob) -> JobResult:
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        assert self._relay is not None
        future = self.client.submit(run_remote_job, task, key=f"module_system-{run.run_id}-{job.job_id}", pure=False)
        with self._lock:
            self._futures[job.job_id] = future
        try:
            outcome: RemoteOutcome = future.result()
        except (CancelledError, FutureCancelledError):  # abandoned after the stop grace: already counted
            return not_started(job, run.context.stopped_status(), "stopped: cancelled on the Dask cluster")
        except KilledWorker as exc:
            log.error("job_lost_workers", error=redact(str(exc))[:300])
            self._relay.forget(job.job_id)
            run.context.stats.job_moved("queued", "failed")
            return not_started(job, "failed", "its Dask workers died while running it, "
                                              "more often than distributed.scheduler.allowed-failures")
        finally:
            with self._lock:
                self._futures.pop(job.job_id, None)
        self._relay.settle(job.job_id, outcome.epoch, outcome.events, _SETTLE_S)
        return outcome.result

    def end_run(self, run: BatchRun) -> None:
        self._ended.set()
        with self._lock:
            left = list(self._futures.values())
        if left:
            self.client.cancel(left, force=True)
        try:
            self.client.run(end_worker_run, run.run_id)
            self.client.sync(self.client.scheduler.module_system_forget_run, run_id=run.run_id)
        except Exception as exc:  # noqa: BLE001 - a worker gone meanwhile: its state went with it
            log.warning("dask_run_cleanup_failed", error=redact(str(exc))[:300])
        if self._remote is not None:
            self.client.unsubscribe_topic(self._remote.topic)
        if self._relay is not None:
            self._relay.close()
        if self._limiters is not None:
            self._limiters.close()

    def close(self) -> None:
        client, cluster = getattr(self, "client", None), self._cluster
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    # ------------------------------------------------------------------ stop

    def _stop_when_stopped(self, run: BatchRun) -> None:
        """Tell every worker once the run is stopped (a signal handler must not wait on the network)."""
        stop = run.context.stop
        while not stop.wait(0.2):
            if self._ended.is_set():
                return
        try:
            self.client.run(stop_worker_run, run.run_id, run.context.stop_reason)
        except Exception as exc:  # noqa: BLE001 - the stop grace then abandons what still runs
            log.warning("dask_stop_not_sent", error=redact(str(exc))[:300])


def _local_cluster(max_workers: int) -> Any:
    """A LocalCluster of worker processes for the run. Its processes ignore SIGINT: Ctrl-C in a
    terminal reaches the whole process group, and the run's own stop (running jobs end at a file
    boundary, the report is written) must not find its workers gone."""
    import signal

    from distributed import LocalCluster

    workers = _local_workers()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    try:
        return LocalCluster(n_workers=workers, threads_per_worker=math.ceil(max_workers / workers),
                            processes=True, dashboard_address=None, silence_logs=logging.WARNING)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _local_workers() -> int:
    text = os.environ.get("MODULE_SYSTEM_DASK_WORKERS", "2")
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"MODULE_SYSTEM_DASK_WORKERS must be a whole number, 1 or more, not {text!r}")
    return int(text)


def _literal_secret(config: Any, path: str = "") -> str | None:
    """The key of the first secret in ``config`` that would pickle with its value, or None."""
    if isinstance(config, Secret):
        return None if has_environment_source(config) else path
    if isinstance(config, dict) or hasattr(config, "items"):
        for key, value in config.items():
            found = _literal_secret(value, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(config, (list, tuple)):
        for i, value in enumerate(config):
            found = _literal_secret(value, f"{path}[{i}]")
            if found is not None:
                return found
    return None


@dataclass
class _Ledger:
    """What the current start (epoch) of one job counted in the run's statistics."""

    epoch: int = 0
    received: int = 0
    moves: list[tuple[str, str]] = field(default_factory=list)
    files: list[tuple[str, int]] = field(default_factory=list)


class ClientRelay:
    """Applies the workers' events to the run's statistics and log files, in a thread of its own.

    Events of an older start of a job (a worker lost mid-job) are logged but not counted; the
    first event of a newer start takes back what the older one counted, so a job restarted
    elsewhere counts once.
    """

    def __init__(self, stats: RunStats, run_id: str) -> None:
        self.stats, self.run_id = stats, run_id
        self._inbox: queue.SimpleQueue[list[Any] | None] = queue.SimpleQueue()
        self._jobs: defaultdict[str, _Ledger] = defaultdict(_Ledger)
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._drain, name="dask-relay", daemon=True)
        self._thread.start()

    def receive(self, event: tuple[float, Any]) -> None:
        """The client's event handler (in its event loop: only queue)."""
        self._inbox.put(event[1])

    def _drain(self) -> None:
        while (message := self._inbox.get()) is not None:
            try:
                self._apply(message)
            except Exception as exc:  # noqa: BLE001 - a malformed event must not end the relay
                log.warning("dask_event_dropped", error=f"{type(exc).__name__}: {exc}"[:200])

    def _apply(self, message: list[Any]) -> None:
        kind, job_id, epoch, *fields = message
        if kind == "log":
            replay_record(str(fields[2]), int(fields[0]), str(fields[1]))
        if not job_id:
            return
        with self._cond:
            ledger = self._jobs[job_id]
            if epoch < ledger.epoch:
                return
            if epoch > ledger.epoch:
                if ledger.epoch:
                    log.warning("job_restarted", run_id=self.run_id, job_id=job_id,
                                reason="its Dask worker was lost; it runs again on another")
                self._take_back(ledger)
                ledger.epoch, ledger.received = epoch, 0
            if kind == "moved":
                self.stats.job_moved(fields[0], fields[1])
                ledger.moves.append((fields[0], fields[1]))
            elif kind == "file":
                self.stats.file_done(fields[0], int(fields[1]))
                ledger.files.append((fields[0], int(fields[1])))
            elif kind == "retry":
                self.stats.retried()
            ledger.received += 1
            self._cond.notify_all()

    def _take_back(self, ledger: _Ledger) -> None:
        for old, new in reversed(ledger.moves):
            self.stats.job_moved(new, old)  # type: ignore[arg-type]
        for status, size in ledger.files:
            self.stats.file_undone(status, size)
        ledger.moves.clear()
        ledger.files.clear()

    def settle(self, job_id: str, epoch: int, events: int, timeout: float) -> None:
        """Wait until the ``events`` events of start ``epoch`` of the job are applied (or ``timeout``)."""
        with self._cond:
            self._cond.wait_for(lambda: self._jobs[job_id].epoch > epoch
                                or (self._jobs[job_id].epoch == epoch and self._jobs[job_id].received >= events),
                                timeout)

    def forget(self, job_id: str) -> None:
        """The job ended without a result from its worker: take back what its start counted."""
        with self._cond:
            ledger = self._jobs[job_id]
            self._take_back(ledger)
            ledger.epoch += 1_000_000  # late events of that start are not counted

    def close(self) -> None:
        self._inbox.put(None)
        self._thread.join(timeout=5)
