"""The batches ``serve`` runs: submitted through the API, run one at a time in a background thread.

:meth:`RunManager.submit` checks the batch against the server's registry (read again for each
submission, so an edited registry applies to the next batch) and writes it to
``<state-dir>/batches/<run_id>.json``; a mistake is a ConfigError (the API's 422) and nothing is
queued. The run id is made then, so the caller can follow the run at once: it is ``queued``
until the server's runner thread takes it. That thread runs one batch at a time, in the order
submitted, through the same machinery as ``module-system run`` (:func:`run_batch` does the same
steps for the CLI): the pre-flight check of the destinations, a
:class:`~orchestrator.job_executor.BatchRun` observed by the history recorder, the run's
metrics and its event bus (:class:`~orchestrator.serve.events.RunEvents`), then the failed-jobs
file and the report (``<state-dir>/report_<run_id>.json``), and the registry's ``notify``
webhooks. Logging is configured once per
process, which is why batches do not run side by side; a batch's jobs still do.

:meth:`RunManager.cancel` sets a running run's stop event (:meth:`BatchRun.interrupt`: the
jobs end ``cancelled`` at their next file boundary, exit 130, as SIGINT does to the CLI) or
takes a queued one out of the queue. :meth:`RunManager.retry_failed` submits the failed-jobs
file of a finished run: exactly the jobs that did not succeed, with their params.
"""

from __future__ import annotations

import datetime as dt
import json
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy.engine import URL

from common.config_model import Batch, Registry
from common.exceptions import ConfigError
from common.job_config import load_batch, load_registry, read_batch
from common.logger import JobLogRouter
from orchestrator.history.reader import HistoryReader
from orchestrator.job_executor import BatchRun, RunOptions, destination_pool, new_run_id
from orchestrator.preflight import check_destinations
from orchestrator.python_api import Executed, notify
from orchestrator.run_metrics import RunMetrics
from orchestrator.run_observer import ObserverGroup
from orchestrator.run_report import build_report, write_failed_jobs, write_json
from orchestrator.run_result import RunResult
from orchestrator.serve.events import RunEvents
from orchestrator.serve.metrics import ServeMetrics

__all__ = ["Conflict", "RunManager", "ServeSettings", "ServedRun"]

log = structlog.get_logger(__name__)


class Conflict(Exception):
    """The request is well formed but the run is not in a state that allows it (the API's 409)."""


@dataclass(frozen=True)
class ServeSettings:
    registry_file: Path
    state_dir: Path
    log_dir: Path
    history_url: URL
    max_workers: int = 20
    monitor_duration: float = 0
    """Seconds each batch may take (0: no limit), as ``run --monitor-duration``."""
    refresh_s: float = 0.5
    keep_served: int = 500
    """Finished runs kept in memory (their live state, for ``served``); older ones are read from
    the history alone. Their metrics are kept (a counter never goes down)."""


class ServedRun:
    """A batch submitted to this server: ``queued``, ``running``, then ``finished`` (its outcome
    in the history) or ``failed`` (it never started: the pre-flight refused it) or ``cancelled``
    (taken out of the queue)."""

    def __init__(self, run_id: str, batch: Batch, registry: Registry, submitted_at: dt.datetime) -> None:
        self.run_id, self.batch, self.registry, self.submitted_at = run_id, batch, registry, submitted_at
        self.state = "queued"
        self.error: str | None = None
        self.exit_code: int | None = None
        self.events = RunEvents(run_id, {job.job_id: job.service_id for job in batch.jobs})
        self.metrics = RunMetrics()
        self.batch_run: BatchRun | None = None
        self.stop = threading.Event()
        self.done = threading.Event()

    @property
    def in_progress(self) -> bool:
        return self.state in ("queued", "running")


class RunManager:
    """Submits, runs, cancels and re-runs batches (see the module docstring)."""

    def __init__(self, settings: ServeSettings, router: JobLogRouter, reader: HistoryReader,
                 metrics: ServeMetrics | None = None) -> None:
        self.settings, self.router, self.reader = settings, router, reader
        self.metrics = metrics or ServeMetrics()
        self._runs: dict[str, ServedRun] = {}
        self._queue: queue.SimpleQueue[ServedRun | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="serve-runner", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ requests

    def get(self, run_id: str) -> ServedRun | None:
        with self._lock:
            return self._runs.get(run_id)

    def served(self) -> list[ServedRun]:
        with self._lock:
            return list(self._runs.values())

    def submit(self, document: Mapping[str, Any]) -> ServedRun:
        """Check ``document`` (a batch, as in a batch file) against the registry and queue it;
        ConfigError when either is wrong (nothing is queued)."""
        now = dt.datetime.now(dt.timezone.utc)
        run_id = new_run_id(now)
        folder = self.settings.state_dir / "batches"
        path = folder / f"{run_id}.json"
        document = {k: v for k, v in document.items() if k != "registry"}  # always the server's registry
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--state-dir {self.settings.state_dir}: cannot write the batch: "
                              f"{exc.strerror or exc}") from None
        try:
            return self._queue_batch(run_id, path, now)
        except ConfigError:
            path.unlink(missing_ok=True)
            raise

    def retry_failed(self, run_id: str) -> ServedRun:
        """A new run of the failed jobs of run ``run_id`` (its failed-jobs file); KeyError when
        there is no such run, Conflict when it has no failed jobs to run or is still running."""
        served = self.get(run_id)
        if served is not None and served.in_progress:
            raise Conflict(f"run {run_id} is still {served.state}")
        summary = self.reader.run(run_id)
        if summary is None:
            if served is not None:
                raise Conflict(f"run {run_id} never started ({served.error}); submit its batch again")
            raise KeyError(run_id)
        run = summary.run
        if run.status == "running":
            raise Conflict(f"run {run_id} is still running")
        if not run.failed_jobs_file:
            raise Conflict(f"run {run_id} has no failed jobs")
        path = Path(run.failed_jobs_file)
        if not path.is_file():
            raise Conflict(f"the failed-jobs file of run {run_id} is not on this machine ({path})")
        named = read_batch(path).get("registry")
        if named and Path(named).resolve() != self.settings.registry_file.resolve():
            raise Conflict(f"run {run_id} ran against another registry ({named}); this server's is "
                           f"{self.settings.registry_file}")
        now = dt.datetime.now(dt.timezone.utc)
        return self._queue_batch(new_run_id(now), path, now)

    def cancel(self, run_id: str) -> ServedRun:
        """Stop a running run cleanly, or take a queued one out of the queue; KeyError for a run
        this server did not start, Conflict for one that is over."""
        served = self.get(run_id)
        if served is None:
            raise KeyError(run_id)
        with self._lock:
            if served.state == "queued":
                served.state = "cancelled"
                served.error = "cancelled before it started"
                served.stop.set()
                served.done.set()
                served.events.finish("cancelled", None, served.error)
                return served
            if served.state != "running":
                raise Conflict(f"run {run_id} is over ({served.state})")
            served.stop.set()
            run = served.batch_run
        if run is not None:
            run.interrupt()
        return served

    def close(self, timeout_s: float = 60.0) -> None:
        """Cancel the queued batches, stop the running one cleanly and wait for it."""
        with self._lock:
            self._closed = True
            runs = list(self._runs.values())
        for served in runs:
            try:
                self.cancel(served.run_id)
            except (Conflict, KeyError):
                pass
        self._queue.put(None)
        self._thread.join(timeout_s)

    # ------------------------------------------------------------------ the runner thread

    def _queue_batch(self, run_id: str, path: Path, now: dt.datetime) -> ServedRun:
        registry = load_registry(self.settings.registry_file)
        document = read_batch(path)
        batch = load_batch(path, registry, document=document)
        served = ServedRun(run_id, batch, registry, now)
        with self._lock:
            if self._closed:
                raise Conflict("the server is shutting down")
            self._runs[run_id] = served
            finished = [r for r in self._runs.values() if not r.in_progress]  # oldest first
            for old in finished[:max(0, len(finished) - self.settings.keep_served)]:
                del self._runs[old.run_id]
        self.metrics.add(served.metrics, lambda: served.state == "running")
        log.info("batch_submitted", run_id=run_id, batch=str(path), jobs=len(batch.jobs))
        self._queue.put(served)
        return served

    def _loop(self) -> None:
        while (served := self._queue.get()) is not None:
            with self._lock:
                if served.state != "queued":
                    continue
                served.state = "running"
            try:
                self._execute(served)
            except Exception as exc:
                log.exception("served_run_failed", run_id=served.run_id,
                              error=f"{type(exc).__name__}: {str(exc)[:300]}")
                self._end(served, "failed", None, f"{type(exc).__name__}: {str(exc)[:300]}")

    def _end(self, served: ServedRun, state: str, exit_code: int | None, error: str | None) -> None:
        with self._lock:
            served.state, served.exit_code, served.error = state, exit_code, error
        status = state if state != "finished" else {0: "succeeded", 130: "interrupted"}.get(exit_code or 0, "failed")
        served.events.finish(status, exit_code, error)
        served.done.set()

    def _execute(self, served: ServedRun) -> None:
        from orchestrator.history.writer import HistoryRecorder

        settings, registry, batch = self.settings, served.registry, served.batch
        options = RunOptions(max_workers=settings.max_workers, monitor_duration=settings.monitor_duration,
                             log_dir=settings.log_dir, temp_dir=settings.state_dir, refresh_s=settings.refresh_s)
        destinations = destination_pool(registry, options)
        try:
            check_destinations(registry, batch, destinations, stop=served.stop)
        except ConfigError as exc:
            destinations.close()
            served.events.error(str(exc), kind="run_not_started")
            self._end(served, "failed", None, str(exc))
            return
        except BaseException:
            destinations.close()
            raise
        recorder = HistoryRecorder(settings.history_url)
        observers = ObserverGroup([served.events, served.metrics, recorder])
        try:
            try:
                run = BatchRun(registry, batch, options, self.router, destinations=destinations,
                               observer=observers, run_id=served.run_id)
            except BaseException:
                destinations.close()
                raise
            with self._lock:
                served.batch_run = run
            if served.stop.is_set():  # cancelled during the pre-flight
                run.interrupt()
            outcome = run.execute(served.events.progress)
            failed_file = write_failed_jobs(outcome, batch, settings.state_dir, registry.path)
            report = settings.state_dir / f"report_{outcome.run_id}.json"
            document = build_report(outcome, batch, failed_file)
            written = write_json(report, document)
            recorder.run_outputs(failed_file, report if written else None)
        finally:
            recorder.close()
        self._end(served, "finished", int(outcome.exit_code), None)
        notify(Executed(RunResult.from_dict(document), outcome, registry, batch))  # as `run` does; never raises
