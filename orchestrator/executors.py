"""Where a run's jobs run: ``--executor threads | dask-local | dask://HOST:PORT``.

The executor of a run (:class:`~orchestrator.job_executor.BatchRun`) owns the queue, the
priorities, the per-host admission, the stop and the deadline, the statistics, the report,
the failed-jobs file and the exit code, whatever runs the jobs. A :class:`JobExecutor`
only runs one admitted job to its :class:`~orchestrator.job_runner.JobResult`:

* ``threads`` (:class:`ThreadJobs`, the default): in the calling thread, one of the run's
  ``--max-workers`` worker threads of this process;
* ``dask-local`` and ``dask://HOST:PORT`` (:class:`orchestrator.dask_executor.DaskJobs`): as
  a task on a Dask distributed cluster (a ``LocalCluster`` of worker processes made for the
  run, or an existing scheduler), the calling thread waiting for it. See docs/DASK.md.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from common.config_model import Batch, JobSpec, Registry
from common.exceptions import ConfigError
from common.host_limiter import HostLimiters

if TYPE_CHECKING:
    from orchestrator.job_executor import BatchRun
    from orchestrator.job_runner import JobResult

__all__ = ["ExecutorChoice", "JobExecutor", "ThreadJobs", "make_executor", "parse_executor"]


@dataclass(frozen=True)
class ExecutorChoice:
    """A parsed ``--executor`` value."""

    kind: str
    """``threads``, ``dask-local`` or ``dask``."""
    address: str | None = None
    """The scheduler's ``tcp://HOST:PORT`` (``dask`` only)."""

    def __str__(self) -> str:
        return self.kind if self.address is None else "dask://" + self.address.removeprefix("tcp://")


def parse_executor(value: str) -> ExecutorChoice:
    """``threads``, ``dask-local`` or ``dask://HOST:PORT``; ConfigError for anything else."""
    text = value.strip()
    if text in ("threads", "dask-local"):
        return ExecutorChoice(text)
    if text.startswith("dask://"):
        host, _, port = text[len("dask://"):].rstrip("/").rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return ExecutorChoice("dask", f"tcp://{host}:{port}")
    raise ConfigError(f"--executor: {value!r} is not one of threads, dask-local, dask://HOST:PORT")


class JobExecutor(Protocol):
    """Runs the admitted jobs of a run. One instance serves one run at a time."""

    name: str

    def check(self, registry: Registry, batch: Batch) -> None:
        """ConfigError when a job of ``batch`` cannot be run here (before anything runs)."""

    def host_limiters(self, run_id: str, stop: threading.Event) -> HostLimiters:
        """The run's per-host limiters (the executor admits jobs with them)."""

    def start_run(self, run: BatchRun) -> None:
        """The run is about to start its jobs (every job's hosts are declared)."""

    def run_job(self, run: BatchRun, job: JobSpec) -> JobResult:
        """Run ``job`` (its host slots taken) to its final state; blocks; never raises."""

    def end_run(self, run: BatchRun) -> None:
        """Every job has ended or was abandoned: free what the run held."""

    def close(self) -> None:
        """Release the executor itself (a cluster it started, its connection)."""


class ThreadJobs:
    """Jobs run in the run's own worker threads, in this process."""

    name = "threads"

    def check(self, registry: Registry, batch: Batch) -> None:
        return None

    def host_limiters(self, run_id: str, stop: threading.Event) -> HostLimiters:
        return HostLimiters(stop)

    def start_run(self, run: BatchRun) -> None:
        return None

    def run_job(self, run: BatchRun, job: JobSpec) -> JobResult:
        return run.run_here(job)

    def end_run(self, run: BatchRun) -> None:
        return None

    def close(self) -> None:
        return None


def make_executor(choice: ExecutorChoice, max_workers: int) -> JobExecutor:
    """The executor for ``choice``; ConfigError when Dask is not installed or its scheduler
    cannot be reached (the run then does not start)."""
    if choice.kind == "threads":
        return ThreadJobs()
    try:
        from orchestrator.dask_executor import DaskJobs
    except ImportError as exc:
        raise ConfigError(f"--executor {choice}: Dask is not installed ({exc.name}); "
                          "pip install 'module_system[distributed]'") from None
    return DaskJobs(choice, max_workers)
