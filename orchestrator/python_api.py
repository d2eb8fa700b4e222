"""The Python API: validate, plan and run a batch from a program (Airflow, Dagster, a script).

    import module_system

    result = module_system.run("project_registry.yaml", "nightly.json", max_workers=8)
    if not result.ok:
        for job in result.failed_jobs:
            print(job.job_id, job.status, job.error)

``module_system.run``, ``validate`` and ``plan`` are these functions; the ``module-system``
command line is a thin layer over them (it adds the live display, the summary, ``sys.exit``
and the signal handlers). They never call ``sys.exit`` and install no signal handler unless
asked (``handle_signals=True``). A registry or batch may be a path or a mapping (the parsed
document, built in Python); a configuration mistake raises
:class:`~common.exceptions.ConfigError` before anything runs, carrying every mistake found in
:attr:`~common.exceptions.ConfigError.problems`. docs/API.md documents all of it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from common.config_model import Batch, Registry
from common.exceptions import ConfigError
from common.job_config import batch_registry, load_batch, load_registry, read_batch
from common.logger import configure_logging
from orchestrator.executors import make_executor, parse_executor
from orchestrator.exit_codes import ExitCode
from orchestrator.job_executor import BatchRun, RunOptions, RunOutcome, destination_pool
from orchestrator.notify import Notified, notify_run
from orchestrator.output_paths import check_writable_dir, check_writable_file
from orchestrator.plan import JobPlan, plan_batch
from orchestrator.preflight import check_destinations
from orchestrator.run_observer import RunObserver
from orchestrator.run_report import build_report, write_failed_jobs, write_json
from orchestrator.run_result import RunResult
from orchestrator.run_stats import StatsSnapshot
from orchestrator.run_watchers import history_target, run_watchers
from orchestrator.state_dir import check_state_dir

__all__ = ["ConfigSource", "Executed", "RunSettings", "Validated", "default_registry", "execute", "load_config",
           "notify", "plan", "plan_loaded", "run", "select_jobs", "stop_on_signals", "validate"]

#: A registry or a batch: a path to its file, or the document as a mapping.
ConfigSource = str | os.PathLike[str] | Mapping[str, Any]
#: The registry used when none is given, the batch names none and ``$MODULE_SYSTEM_REGISTRY`` is unset.
DEFAULT_REGISTRY = Path("project_registry.yaml")
#: How a registry / batch given as a mapping is named in errors and the report.
IN_MEMORY_REGISTRY, IN_MEMORY_BATCH = Path("<registry>"), Path("<batch>")


@dataclass(frozen=True)
class RunSettings:
    """The options of :func:`run` (each is also a ``module-system run`` option)."""

    max_workers: int = 20
    """Jobs running at once (``--max-workers``)."""
    monitor_duration: float = 0
    """Seconds to wait for the batch, then the remaining jobs time out; 0 waits for all."""
    report: str | os.PathLike[str] | None = None
    """Also write the run report (JSON) to this file (``--report``)."""
    log_dir: str | os.PathLike[str] | None = None
    """Where log files go; default ``<state_dir>/logs``."""
    state_dir: str | os.PathLike[str] = "temp"
    """Temp files, resume state of uploads, failed-jobs files (``--state-dir``)."""
    jobs: Iterable[str] = ()
    """Run only these jobs of the batch (``--job``); with ``services``, jobs matching either."""
    services: Iterable[str] = ()
    """Run only the jobs of these services (``--service``)."""
    rejected_ok: bool = False
    """Rejected files alone do not make the exit code 1; they are still counted (``--rejected-ok``)."""
    executor: str = "threads"
    """Where jobs run (``--executor``): ``threads``, ``dask-local`` or ``dask://HOST:PORT`` (docs/DASK.md)."""
    handle_signals: bool = False
    """Install SIGINT/SIGTERM handlers that stop the run cleanly (main thread only); off by default."""
    log_format: Literal["off", "console", "json"] = "off"
    """Console logging: ``off`` (the default here: log files only), ``console`` or ``json`` on stderr."""
    console_level: int | None = None
    """Level of the console log handler (``-q`` / ``-v``); None: warnings (console), ``LOG_LEVEL`` (json)."""
    on_progress: Callable[[StatsSnapshot], None] | None = field(default=None, compare=False)
    """Called with live statistics about twice a second while the run goes on."""
    notify: bool = True
    """Post to the registry's ``notify`` webhooks when the run ends."""
    history: bool = True
    """Record the run in the run history (``--no-history``: False); docs/HISTORY.md."""
    history_db: str | None = None
    """The history database, a SQLAlchemy URL (``--history-db``); None: ``<state_dir>/history.sqlite3``."""
    metrics_port: int | None = None
    """Serve Prometheus metrics on 127.0.0.1:PORT while the run is in progress (``--metrics-port``)."""
    observers: Sequence[RunObserver] = field(default=(), compare=False)
    """More observers of the run (:class:`~orchestrator.run_observer.RunObserver`): told each job's
    start and result, each file and notable event, as they happen."""

    def __post_init__(self) -> None:
        if isinstance(self.jobs, str) or isinstance(self.services, str):
            raise TypeError("jobs and services are collections of ids, not one string")
        object.__setattr__(self, "jobs", tuple(self.jobs))
        object.__setattr__(self, "services", tuple(self.services))
        if not isinstance(self.max_workers, int) or self.max_workers < 1:
            raise ConfigError(f"--max-workers must be at least 1, not {self.max_workers}")
        if not (isinstance(self.monitor_duration, (int, float)) and 0 <= self.monitor_duration < float("inf")):
            raise ConfigError(f"--monitor-duration must be a finite number of seconds, 0 or more, "
                              f"not {self.monitor_duration}")
        if self.log_format not in ("off", "console", "json"):
            raise ConfigError(f"--log-format must be console or json, not {self.log_format!r}")
        parse_executor(self.executor)

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir)

    @property
    def log_path(self) -> Path:
        return Path(self.log_dir) if self.log_dir is not None else self.state_path / "logs"

    @property
    def report_path(self) -> Path | None:
        return Path(self.report) if self.report is not None else None


@dataclass(frozen=True)
class Executed:
    """A finished run with what the command line shows besides the result."""

    result: RunResult
    outcome: RunOutcome
    registry: Registry
    batch: Batch


@dataclass(frozen=True)
class Validated:
    """A registry (and batch) that passed every check."""

    registry: str
    """The registry's path (``<registry>`` for a mapping)."""
    services: tuple[str, ...]
    batch: str | None
    """The batch's path, or None when only the registry was checked."""
    jobs: tuple[str, ...]


def run(registry: ConfigSource | None, batch: ConfigSource, **options: Any) -> RunResult:
    """Run ``batch`` against ``registry`` and return the report as a :class:`RunResult`.

    ``registry`` None: the registry the batch names (key ``registry``), else
    ``$MODULE_SYSTEM_REGISTRY``, else ``./project_registry.yaml``. ``options`` are the fields of :class:`RunSettings`
    (``max_workers``, ``report``, ``jobs``, ``rejected_ok``, ``handle_signals``, ...).
    Raises :class:`~common.exceptions.ConfigError` (nothing ran) for a configuration mistake,
    an unwritable ``report``/``log_dir``/``state_dir`` or a destination that cannot be written;
    a run that ends with failed jobs returns normally (``result.exit_code`` says 1). Never
    calls ``sys.exit``.
    """
    settings = RunSettings(**options)
    executed = execute(registry, batch, settings)
    if settings.notify:
        notify(executed)
    return executed.result


def validate(registry: ConfigSource | None, batch: ConfigSource | None = None) -> Validated:
    """Check the registry (and the batch, when given) completely; run nothing.

    Returns what was checked; raises :class:`~common.exceptions.ConfigError` whose
    ``problems`` lists every mistake found (up to 20), one line each naming the file, the
    service or job, and the key.
    """
    if batch is None:
        if registry is None:
            raise ConfigError("validate: give a registry, a batch, or both")
        loaded = _load_registry(registry)
        return Validated(str(loaded.path), tuple(loaded.services), None, ())
    reg, bat = load_config(registry, batch)
    return Validated(str(reg.path), tuple(reg.services), str(bat.path), tuple(j.job_id for j in bat.jobs))


def plan(registry: ConfigSource | None, batch: ConfigSource, *, jobs: Iterable[str] = (),
         services: Iterable[str] = (), state_dir: str | os.PathLike[str] = "temp") -> list[JobPlan]:
    """What a run would do, per job, from the sources' listings; downloads and writes nothing.

    One :class:`~orchestrator.plan.JobPlan` per (selected) job, in batch order: its
    ``status`` (``planned``, ``cannot_plan``, ``failed``), ``entries`` with their action
    (``new``, ``changed``, ``unchanged``, ``filtered``, ``too_large``), ``counts()`` and
    ``bytes()``. Raises ConfigError as :func:`validate` does.
    """
    reg, bat = load_config(registry, batch)
    return plan_loaded(reg, select_jobs(bat, tuple(jobs), tuple(services)), Path(state_dir))


def plan_loaded(registry: Registry, batch: Batch, state_dir: Path = Path("temp")) -> list[JobPlan]:
    """:func:`plan` of a registry and batch already loaded."""
    pool = destination_pool(registry, RunOptions(temp_dir=state_dir))
    try:
        return list(plan_batch(registry, batch, pool))
    finally:
        pool.close()


def default_registry() -> Path:
    """``$MODULE_SYSTEM_REGISTRY``, else ``./project_registry.yaml``."""
    return Path(os.environ.get("MODULE_SYSTEM_REGISTRY") or DEFAULT_REGISTRY)


def load_config(registry: ConfigSource | None, batch: ConfigSource) -> tuple[Registry, Batch]:
    """Both parsed and validated, or ConfigError. The registry: ``registry``, else the one
    the batch names (a failed-jobs file names its run's), else :func:`default_registry`."""
    if isinstance(batch, Mapping):
        batch_path, document = IN_MEMORY_BATCH, read_batch(IN_MEMORY_BATCH, document=batch)
    else:
        batch_path = Path(batch)
        document = read_batch(batch_path)
    if registry is None:
        registry = batch_registry(batch_path, document) or default_registry()
    loaded = _load_registry(registry)
    return loaded, load_batch(batch_path, loaded, document=document)


def _load_registry(registry: ConfigSource) -> Registry:
    if isinstance(registry, Mapping):
        return load_registry(IN_MEMORY_REGISTRY, document=registry)
    return load_registry(Path(registry))


def select_jobs(batch: Batch, jobs: tuple[str, ...], services: tuple[str, ...]) -> Batch:
    """The jobs of ``batch`` named in ``jobs`` or belonging to a service of ``services``
    (all of them when both are empty). An id that matches nothing is a ConfigError."""
    if not jobs and not services:
        return batch
    job_ids = {job.job_id for job in batch.jobs}
    service_ids = {job.service_id for job in batch.jobs}
    errors = [ConfigError(f"{batch.path}: job '{j}': not in the batch (--job)", file=str(batch.path), key="job_id")
              for j in jobs if j not in job_ids]
    errors += [ConfigError(f"{batch.path}: service '{s}': no job of the batch uses it (--service)",
                           file=str(batch.path), key="service_id") for s in services if s not in service_ids]
    if errors:
        raise ConfigError.gather(errors)
    chosen = tuple(job for job in batch.jobs if job.job_id in jobs or job.service_id in services)
    return replace(batch, jobs=chosen)


def execute(registry: ConfigSource | None, batch: ConfigSource, settings: RunSettings,
            progress: Callable[[], Callable[[StatsSnapshot], None]] | None = None) -> Executed:
    """Everything :func:`run` does but notifying; ``progress`` makes the progress callback
    once every check passed (the command line's live display starts only then)."""
    reg, bat = load_config(registry, batch)
    bat = select_jobs(bat, settings.jobs, settings.services)  # type: ignore[arg-type]
    if settings.report_path is not None:
        check_writable_file(settings.report_path, "--report")
    check_writable_dir(settings.log_path, "--log-dir")
    check_state_dir(settings.state_path)
    history = history_target(settings.history, settings.history_db, settings.state_path)
    router = configure_logging(settings.log_path, settings.log_format, console_level=settings.console_level)
    options = RunOptions(max_workers=settings.max_workers, monitor_duration=settings.monitor_duration,
                         log_dir=settings.log_path, temp_dir=settings.state_path, rejected_ok=settings.rejected_ok)
    with run_watchers(history, settings.metrics_port, settings.observers) as (observers, recorder):
        destinations = destination_pool(reg, options)
        try:
            check_destinations(reg, bat, destinations)
            jobs_executor = make_executor(parse_executor(settings.executor), settings.max_workers)
        except BaseException:
            destinations.close()
            raise
        try:
            jobs_executor.check(reg, bat)
            batch_run = BatchRun(reg, bat, options, router, destinations=destinations, executor=jobs_executor,
                                 observer=observers)
            on_progress = progress() if progress is not None else settings.on_progress
            with stop_on_signals(batch_run) if settings.handle_signals else nullcontext():
                outcome = batch_run.execute(on_progress)
        except BaseException:
            destinations.close()
            raise
        finally:
            jobs_executor.close()
        in_file = reg.path != IN_MEMORY_REGISTRY
        failed_file = write_failed_jobs(outcome, bat, settings.state_path, reg.path if in_file else None)
        document = build_report(outcome, bat, failed_file)
        written = settings.report_path is not None and write_json(settings.report_path, document)
        if recorder is not None:
            recorder.run_outputs(failed_file, settings.report_path if written else None)
    return Executed(RunResult.from_dict(document), outcome, reg, bat)


def notify(executed: Executed) -> list[Notified]:
    """Post the run summary to the registry's ``notify`` webhooks (none: nothing happens)."""
    if executed.registry.notify is None:
        return []
    return notify_run(executed.registry.notify, executed.result, str(executed.registry.path))


@contextmanager
def stop_on_signals(run: BatchRun) -> Iterator[None]:
    """SIGINT/SIGTERM stop the run cleanly: transfers in flight are cut (the transfer
    watchdog), jobs end ``cancelled``, the report and failed-jobs file are written, exit 130.
    A second signal ends the process at once with exit 130 and nothing more written.
    Outside the main thread (where Python allows no handler) this does nothing."""
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            os.write(2, b"error: second interrupt; exiting now without the report\n")
            os._exit(int(ExitCode.INTERRUPTED))
        received.append(signum)
        run.interrupt()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
