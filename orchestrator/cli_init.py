"""The command line: ``module-system run|validate|plan|check|modules|new-module|history|show|serve`` and
``python -m orchestrator.cli_init``.

``python -m orchestrator.cli_init --batch-file FILE`` is the same command as
``module-system run --batch-file FILE``. A configuration mistake prints one line
naming the file, the service or job, and the key, and exits 2; nothing runs.
"""

from __future__ import annotations

import math
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from common.config_model import Batch, Registry
from common.exceptions import ConfigError
from common.job_config import batch_registry, load_batch, load_registry, read_batch
from common.logger import configure_logging
from common.plugins import default_catalog, default_destinations, default_validators
from common.terminal_text import printable
from orchestrator.console import ProgressDisplay, print_summary
from orchestrator.exit_codes import ExitCode
from orchestrator.job_executor import BatchRun, RunOptions, destination_pool
from orchestrator.output_paths import check_writable_dir, check_writable_file
from orchestrator.preflight import check_destinations
from orchestrator.run_observer import ObserverGroup
from orchestrator.run_report import (
    build_report,
    rerun_args,
    write_failed_jobs,
    write_json,
)
from orchestrator.state_dir import check_state_dir
from orchestrator.worker_threads import exit_if_abandoned

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from orchestrator.history.writer import HistoryRecorder

F = TypeVar("F", bound=Callable[..., Any])


def _default_registry() -> str:
    return os.environ.get("MODULE_SYSTEM_REGISTRY") or "project_registry.yaml"


def _registry_option(fn: F) -> F:
    return click.option("--registry", "registry_file", type=click.Path(dir_okay=False, path_type=Path),
                        default=None, help="The registry [default: $MODULE_SYSTEM_REGISTRY, else ./project_registry.yaml].")(fn)


def _batch_option(fn: F) -> F:
    return click.option("--batch-file", required=True, type=click.Path(dir_okay=False, path_type=Path),
                        help="The batch of jobs (JSON).")(fn)


def _load(registry_file: Path | None, batch_file: Path) -> tuple[Registry, Batch]:
    """Both files parsed and validated, or ConfigError. The registry: ``--registry``, else the
    one the batch names (a failed-jobs file names its run's), else the default."""
    document = read_batch(batch_file)
    registry = load_registry(registry_file or batch_registry(batch_file, document) or Path(_default_registry()))
    return registry, load_batch(batch_file, registry, document=document)


def _config_errors_exit_2(fn: F) -> F:
    """The one place that turns a ConfigError into one line on stderr and exit 2."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            click.echo(f"error: {printable(str(exc))}", err=True)
            sys.exit(ExitCode.USAGE)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


@contextmanager
def _stop_on_signals(run: BatchRun) -> Iterator[None]:
    """SIGINT/SIGTERM stop the run cleanly: transfers in flight are cut (the transfer
    watchdog), jobs end ``cancelled``, the report and failed-jobs file are written, exit 130.
    A second signal ends the process at once with exit 130 and nothing more written."""
    if sys.platform == "win32" or not _in_main_thread():
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


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def run_batch(batch_file: Path, registry_file: Path | None = None, max_workers: int = 20,
              monitor_duration: float = 0, report: Path | None = None, log_dir: Path | None = None,
              log_format: str | None = None, state_dir: Path = Path("temp"), history_db: str | None = None,
              history: bool = True, metrics_port: int | None = None) -> ExitCode:
    """Everything ``run`` does, as a function (the demo and tests call it too). Raises ConfigError.

    ``log_dir`` None is ``<state_dir>/logs``. Every destination is checked before any job
    starts (:func:`orchestrator.preflight.check_destinations`). The run is recorded in the
    history database (``history_db``, a SQLAlchemy URL, else ``<state_dir>/history.sqlite3``;
    ``history`` False: not recorded), and its metrics are served on 127.0.0.1:``metrics_port``
    while it runs (None: not served).
    """
    if max_workers < 1:
        raise ConfigError(f"--max-workers must be at least 1, not {max_workers}")
    if not math.isfinite(monitor_duration) or monitor_duration < 0:
        raise ConfigError(f"--monitor-duration must be a finite number of seconds, 0 or more, not {monitor_duration}")
    registry, batch = _load(registry_file, batch_file)
    if report is not None:
        check_writable_file(report, "--report")
    log_dir = log_dir if log_dir is not None else state_dir / "logs"
    check_writable_dir(log_dir, "--log-dir")
    check_state_dir(state_dir)
    url: URL | str | None = None
    if history and history_db:
        from orchestrator.history.store import history_url

        url = history_url(history_db, state_dir)  # a bad URL is exit 2 before anything runs
    elif history:
        from orchestrator.history import default_history_url

        url = default_history_url(state_dir)  # SQLAlchemy is imported by the history's thread
    fmt = log_format or ("console" if sys.stdout.isatty() else "json")
    router = configure_logging(log_dir, fmt)
    options = RunOptions(max_workers=max_workers, monitor_duration=monitor_duration, log_dir=log_dir,
                         temp_dir=state_dir)
    with _run_watchers(url, metrics_port) as (observers, recorder):  # a busy --metrics-port: exit 2 here
        destinations = destination_pool(registry, options)
        try:
            check_destinations(registry, batch, destinations)
        except KeyboardInterrupt:
            destinations.close()
            return ExitCode.INTERRUPTED
        except BaseException:
            destinations.close()
            raise
        run = BatchRun(registry, batch, options, router, destinations=destinations, observer=observers)
        display = ProgressDisplay(fmt)
        with _stop_on_signals(run):
            outcome = run.execute(display)
        display.close(outcome.stats)
        failed_file = write_failed_jobs(outcome, batch, state_dir, registry.path)
        written = report is not None and write_json(report, build_report(outcome, batch, failed_file))
        if recorder is not None:
            recorder.run_outputs(failed_file, report if written else None)
    rerun = rerun_args(failed_file, registry.path, Path(_default_registry())) if failed_file else None
    print_summary(outcome.results, fmt, failed_file, report, rerun_args=rerun)
    return outcome.exit_code


@contextmanager
def _run_watchers(url: URL | str | None,
                  metrics_port: int | None) -> Iterator[tuple[ObserverGroup, HistoryRecorder | None]]:
    """The run's observers: the history recorder (``url``) and the metrics served on
    ``metrics_port``; the history's last rows are written and the server stopped on leaving."""
    observers = ObserverGroup()
    server = None
    if metrics_port is not None:
        from orchestrator.run_metrics import RunMetrics, serve_metrics

        metrics = RunMetrics()
        server = serve_metrics(metrics.registry, metrics_port)
        observers.add(metrics)
    recorder = None
    if url is not None:
        from orchestrator.history.writer import HistoryRecorder

        recorder = HistoryRecorder(url)
        observers.add(recorder)
    try:
        yield observers, recorder
    finally:
        if recorder is not None:
            recorder.close()
        if server is not None:
            server.close()


_run_options = [
    _batch_option,
    _registry_option,
    click.option("--max-workers", type=int, default=20, show_default=True, help="Jobs running at once."),
    click.option("--monitor-duration", type=float, default=0, show_default=True,
                 help="Seconds to wait for the batch; then remaining jobs time out. 0 waits for all."),
    click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Write the run report (JSON) here."),
    click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                 help="Where log files go [default: <state-dir>/logs]."),
    click.option("--log-format", type=click.Choice(["console", "json"]), default=None,
                 help="Console output style [default: console on a TTY, json otherwise]."),
    click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("temp"),
                 envvar="MODULE_SYSTEM_STATE_DIR", show_default=True, show_envvar=True,
                 help="Where temp files, the resume state of uploads, failed-jobs files and the history live."),
    click.option("--history-db", default=None, envvar="MODULE_SYSTEM_HISTORY_DB", show_envvar=True,
                 help="Record the run in this database (a SQLAlchemy URL) [default: <state-dir>/history.sqlite3]."),
    click.option("--no-history", "no_history", is_flag=True, default=False, help="Do not record the run."),
    click.option("--metrics-port", type=int, default=None,
                 help="Serve Prometheus metrics at http://127.0.0.1:PORT/metrics while the run is in progress."),
]


def _with_run_options(fn: F) -> F:
    for option in reversed(_run_options):
        fn = option(fn)
    return fn


@_config_errors_exit_2
def _run(batch_file: Path, registry_file: Path | None, max_workers: int, monitor_duration: float,
         report: Path | None, log_dir: Path | None, log_format: str | None, state_dir: Path,
         history_db: str | None, no_history: bool, metrics_port: int | None) -> None:
    code = run_batch(batch_file, registry_file, max_workers, monitor_duration, report, log_dir, log_format,
                     state_dir=state_dir, history_db=history_db, history=not no_history, metrics_port=metrics_port)
    sys.exit(int(code))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="module_system")
def main() -> None:
    """module_system: fetch -> validate -> upload, from many sources to S3."""


@main.command("run")
@_with_run_options
def run_command(**kwargs: Any) -> None:
    """Run every job of a batch."""
    _run(**kwargs)


@main.command("validate")
@_batch_option
@_registry_option
@_config_errors_exit_2
def validate_command(batch_file: Path, registry_file: Path | None) -> None:
    """Check the registry and the batch; run nothing."""
    registry, batch = _load(registry_file, batch_file)
    click.echo(printable(f"ok: {registry.path}: {len(registry.services)} service(s); "
                         f"{batch.path}: {len(batch.jobs)} job(s)"))


@main.command("plan")
@_batch_option
@_registry_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: a line per job and the totals; json: every job with its entries.")
@_config_errors_exit_2
def plan_command(batch_file: Path, registry_file: Path | None, fmt: str) -> None:
    """What a run would do, per job, from the sources' listings; downloads nothing."""
    import json as json_module

    from orchestrator.plan import ACTIONS, plan_batch

    registry, batch = _load(registry_file, batch_file)
    configure_logging(None, "console", stream=sys.stderr)
    pool = destination_pool(registry, RunOptions())
    try:
        plans = list(plan_batch(registry, batch, pool))
    finally:
        pool.close()
    totals = {a: sum(p.counts()[a] for p in plans) for a in ACTIONS}
    sizes = {a: sum(p.bytes()[a] for p in plans) for a in ACTIONS}
    if fmt == "json":
        click.echo(json_module.dumps({"batch": str(batch.path), "registry": str(registry.path),
                                      "jobs": [p.to_dict() for p in plans], "totals": {"files": totals, "bytes": sizes}},
                                     indent=1))
    else:
        for plan in plans:
            if plan.status != "planned":
                click.echo(printable(f"{plan.job_id}  {plan.service_id}  {plan.status.replace('_', ' ')}: {plan.error}"))
                continue
            counts, size = plan.counts(), plan.bytes()
            click.echo(printable(f"{plan.job_id}  {plan.service_id}  new {counts['new']} ({size['new']} bytes)  "
                                 f"changed {counts['changed']} ({size['changed']} bytes)  unchanged "
                                 f"{counts['unchanged']}  filtered {counts['filtered']}  too large {counts['too_large']}"))
        fetch = totals["new"] + totals["changed"]
        click.echo(f"total: {fetch} file(s) to fetch ({sizes['new'] + sizes['changed']} bytes), {totals['unchanged']} "
                   f"unchanged, {totals['filtered']} filtered out, {totals['too_large']} too large")
    sys.exit(ExitCode.JOBS_FAILED if any(p.status == "failed" for p in plans) else ExitCode.OK)


@main.command("check")
@click.option("--batch-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Check the services this batch uses (default: every service of the registry).")
@_registry_option
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@_config_errors_exit_2
def check_command(batch_file: Path | None, registry_file: Path | None, fmt: str) -> None:
    """Connect once to each source and destination; say, per service, what answers."""
    import json as json_module

    from orchestrator.check import check_services

    if batch_file is not None:
        registry, batch = _load(registry_file, batch_file)
        ids = list(dict.fromkeys(job.service_id for job in batch.jobs))
    else:
        registry = load_registry(registry_file or Path(_default_registry()))
        ids = list(registry.services)
    configure_logging(None, "console", stream=sys.stderr)
    pool = destination_pool(registry, RunOptions())
    try:
        results = check_services((registry.services[i] for i in ids), pool)
    finally:
        pool.close()
    if fmt == "json":
        click.echo(json_module.dumps({"registry": str(registry.path), "services": [r.to_dict() for r in results]},
                                     indent=1))
    else:
        for r in results:
            line = f"{r.service_id}  source: {r.source.replace('_', ' ')}"
            if r.source_detail:
                line += f" ({r.source_detail})"
            for d in r.destinations:
                line += f"  destination {d['name']}: {d['verdict']}" + (f" ({d['detail']})" if d["detail"] else "")
            click.echo(printable(line))
    sys.exit(ExitCode.OK if all(r.ok for r in results) else ExitCode.JOBS_FAILED)


def _history_options(fn: F) -> F:
    fn = click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)(fn)
    fn = click.option("--history-db", default=None, envvar="MODULE_SYSTEM_HISTORY_DB", show_envvar=True,
                      help="The history database (a SQLAlchemy URL) [default: <state-dir>/history.sqlite3].")(fn)
    return click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("temp"),
                        envvar="MODULE_SYSTEM_STATE_DIR", show_default=True, show_envvar=True,
                        help="The state directory of the runs.")(fn)


@main.command("history")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True, help="Runs to list, newest first.")
@click.option("--offset", type=click.IntRange(0), default=0, show_default=True, help="Skip this many newest runs.")
@click.option("--status", type=click.Choice(["running", "succeeded", "failed", "interrupted"]), default=None,
              help="Only runs with this status.")
@_history_options
@_config_errors_exit_2
def history_command(limit: int, offset: int, status: str | None, state_dir: Path, history_db: str | None,
                    fmt: str) -> None:
    """List recorded runs, newest first."""
    from orchestrator.history_view import HistoryError, open_reader, print_runs

    configure_logging(None, "console", stream=sys.stderr)
    try:
        with open_reader(history_db, state_dir) as reader:
            page = reader.list_runs(limit=limit, offset=offset, status=status) if reader is not None else None
            print_runs(list(page.items) if page else [], page.total if page else 0, fmt, sys.stdout)
    except HistoryError as exc:
        click.echo(f"error: {printable(str(exc))}", err=True)
        sys.exit(ExitCode.JOBS_FAILED)


@main.command("show")
@click.argument("run_id")
@click.option("--all-files", is_flag=True, default=False, help="Every file, not only those rejected or failed.")
@_history_options
@_config_errors_exit_2
def show_command(run_id: str, all_files: bool, state_dir: Path, history_db: str | None, fmt: str) -> None:
    """One recorded run: its jobs, events and files (those rejected or failed unless --all-files)."""
    from orchestrator.history_view import HistoryError, open_reader, print_run

    configure_logging(None, "console", stream=sys.stderr)
    try:
        with open_reader(history_db, state_dir) as reader:
            detail = reader.run(run_id) if reader is not None else None
            if reader is None or detail is None:
                raise ConfigError(f"no run {run_id!r} in the history (module-system history lists them)")
            print_run(reader, detail, fmt, all_files, sys.stdout)
    except HistoryError as exc:
        click.echo(f"error: {printable(str(exc))}", err=True)
        sys.exit(ExitCode.JOBS_FAILED)


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; beyond loopback only with a token configured.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port to listen on (0: any free one).")
@click.option("--history-db", default=None, envvar="MODULE_SYSTEM_HISTORY_DB", show_envvar=True,
              help="The history database (a SQLAlchemy URL) [default: <state-dir>/history.sqlite3].")
@_registry_option
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("temp"),
              envvar="MODULE_SYSTEM_STATE_DIR", show_default=True, show_envvar=True,
              help="The state directory of the runs it starts (and of the history by default).")
@click.option("--log-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the runs' log files go [default: <state-dir>/logs].")
@click.option("--tokens-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="MODULE_SYSTEM_API_TOKENS_FILE", show_envvar=True,
              help="Bearer tokens, one a line: TOKEN read[,operate] (also $MODULE_SYSTEM_API_TOKEN: both "
                   "scopes; $MODULE_SYSTEM_API_READ_TOKEN: read).")
@click.option("--rate-limit", type=int, default=30, show_default=True,
              help="Mutating requests a client may make per minute (a token bucket; 0: no limit).")
@click.option("--max-workers", type=int, default=20, show_default=True, help="Jobs running at once in a batch.")
@click.option("--monitor-duration", type=float, default=0, show_default=True,
              help="Seconds each batch may take; then its remaining jobs time out. 0 waits for all.")
@_config_errors_exit_2
def serve_command(host: str, port: int, history_db: str | None, registry_file: Path | None, state_dir: Path,
                  log_dir: Path | None, tokens_file: Path | None, rate_limit: int, max_workers: int,
                  monitor_duration: float) -> None:
    """Serve the run history, a JSON API to submit and follow batches, metrics and a dashboard."""
    from orchestrator.serve.command import serve

    sys.exit(serve(host, port, registry_file or Path(_default_registry()), state_dir, log_dir, history_db,
                   tokens_file, rate_limit, max_workers, monitor_duration))


@main.command("modules")
def modules_command() -> None:
    """List installed source modules, destinations and validators with their package and version."""
    configure_logging(None, "console")
    broken = False
    for kind, catalog in (("source", default_catalog()), ("destination", default_destinations()),
                          ("validator", default_validators())):
        for info in catalog.describe():
            line = f"{kind:<12} {info.name:<12} {info.package} {info.version}  ({info.target})"
            if info.error:
                broken = True
                line += f"  UNAVAILABLE: {info.error}"
            click.echo(printable(line))
    sys.exit(ExitCode.JOBS_FAILED if broken else ExitCode.OK)


from orchestrator.cli_new_module import new_module_command

main.add_command(new_module_command)


@click.command("cli_init")
@_with_run_options
def cli_init(**kwargs: Any) -> None:
    """Run every job of a batch (same as ``module-system run``)."""
    _run(**kwargs)


def run_program(command: click.Command) -> NoReturn:
    """Run ``command`` as this process's program (its exit code is the process's); a job stuck
    past the stop grace must not hold the exit (:func:`exit_if_abandoned`). Only the program
    entry points (``python -m orchestrator.cli_init``, ``python -m module_system``, the
    ``module-system`` script) go through it; ``main()`` or ``run_batch()`` called from Python
    do not."""
    try:
        command.main()
    except SystemExit as done:
        exit_if_abandoned(done.code)
        raise
    sys.exit(0)  # command.main() exits itself; this only satisfies NoReturn


def console_main() -> NoReturn:
    """The ``module-system`` script."""
    run_program(main)


if __name__ == "__main__":
    run_program(cli_init)
