"""The command line: ``module-system run|validate|plan|check|modules|schema|new-module|history|show|serve``
and ``python -m orchestrator.cli_init``.

A thin layer over the Python API (:mod:`orchestrator.python_api`, ``module_system.run`` /
``validate`` / ``plan``): this module parses options, shows the live display and the summary,
installs the signal handlers and turns results into exit codes.
``python -m orchestrator.cli_init --batch-file FILE`` is the same command as
``module-system run --batch-file FILE``. A configuration mistake prints one line per mistake
(up to 20) naming the file, the service or job, and the key, and exits 2; nothing runs.

Every option can also be set from the environment as ``MODULE_SYSTEM_<OPTION>`` (click's
``auto_envvar_prefix``: ``--max-workers`` is ``MODULE_SYSTEM_MAX_WORKERS``, for every
command; ``--format`` is ``MODULE_SYSTEM_FORMAT``). The one exception is ``--registry``:
``MODULE_SYSTEM_REGISTRY`` is the registry used when neither ``--registry`` nor the batch
names one. New options get their variable by themselves: add them to a shared option list
(:data:`_run_options`) or with the decorators below.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from common.exceptions import ConfigError
from common.job_config import load_registry
from common.logger import configure_logging
from common.plugins import default_catalog, default_destinations, default_validators
from common.terminal_text import printable
from orchestrator.console import ProgressDisplay, print_summary
from orchestrator.exit_codes import ExitCode
from orchestrator.job_executor import RunOptions, destination_pool
from orchestrator.python_api import (
    RunSettings,
    default_registry,
    execute,
    load_config,
    notify,
    plan_loaded,
    select_jobs,
    validate,
)
from orchestrator.run_report import rerun_args
from orchestrator.run_stats import StatsSnapshot
from orchestrator.worker_threads import exit_if_abandoned

F = TypeVar("F", bound=Callable[..., Any])

#: Every command's context: ``-h``, and ``MODULE_SYSTEM_<OPTION>`` for every option (set on
#: each command too, so that a sub-command's variables are not ``MODULE_SYSTEM_RUN_<OPTION>``).
CONTEXT: dict[str, Any] = {"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "MODULE_SYSTEM"}


def _registry_option(fn: F) -> F:
    return click.option("--registry", "registry_file", type=click.Path(dir_okay=False, path_type=Path),
                        default=None, allow_from_autoenv=False,
                        help="The registry [default: the one the batch names, else $MODULE_SYSTEM_REGISTRY, "
                             "else ./project_registry.yaml].")(fn)


def _batch_option(fn: F) -> F:
    return click.option("--batch-file", required=True, type=click.Path(dir_okay=False, path_type=Path),
                        help="The batch of jobs (JSON).")(fn)


def _selection_options(fn: F) -> F:
    """``--job ID`` / ``--service ID``, repeatable: only part of the batch."""
    fn = click.option("--service", "service", multiple=True, metavar="ID",
                      help="Only the jobs of this service (repeatable; with --job: jobs matching either).")(fn)
    return click.option("--job", "job", multiple=True, metavar="ID",
                        help="Only this job of the batch (repeatable).")(fn)


def _format_option(fn: F) -> F:
    return click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
                        envvar="MODULE_SYSTEM_FORMAT", help="text for people, json for programs.")(fn)


def _verbosity_options(fn: F) -> F:
    fn = click.option("-v", "--verbose", count=True,
                      help="More console output: -v info log records, -vv debug.")(fn)
    return click.option("-q", "--quiet", is_flag=True, default=False,
                        help="Less console output: errors only; no live statistics, no summary table.")(fn)


def _echo_config_error(exc: ConfigError) -> None:
    for problem in exc.problems:
        click.echo(f"error: {printable(problem.message)}", err=True)
    if exc.omitted:
        click.echo(f"error: ... and {exc.omitted} more mistake(s) not shown", err=True)


def _config_errors_exit_2(fn: F) -> F:
    """The one place that turns a ConfigError into one line per mistake on stderr and exit 2."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            _echo_config_error(exc)
            sys.exit(ExitCode.USAGE)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper  # type: ignore[return-value]


def _console_level(quiet: bool, verbose: int) -> int | None:
    if quiet:
        return logging.ERROR
    if verbose:
        return logging.DEBUG if verbose > 1 else logging.INFO
    return None


def run_batch(batch_file: Path, registry_file: Path | None = None, max_workers: int = 20,
              monitor_duration: float = 0, report: Path | None = None, log_dir: Path | None = None,
              log_format: str | None = None, state_dir: Path = Path("temp"), *, job: tuple[str, ...] = (),
              service: tuple[str, ...] = (), quiet: bool = False, verbose: int = 0, no_history: bool = False,
              **options: Any) -> ExitCode:
    """Everything ``run`` does, as a function (the demo and tests call it too). Raises ConfigError.

    ``log_dir`` None is ``<state_dir>/logs``. Every destination is checked before any job
    starts (:func:`orchestrator.preflight.check_destinations`). ``options``: the other
    fields of :class:`~orchestrator.python_api.RunSettings` (``rejected_ok``, ``history_db``,
    ``metrics_port``, ...); ``no_history`` is ``history=False`` (the run is not recorded).
    """
    if no_history:
        options["history"] = False
    fmt = log_format or ("console" if sys.stdout.isatty() else "json")
    settings = RunSettings(max_workers=max_workers, monitor_duration=monitor_duration, report=report,
                           log_dir=log_dir, state_dir=state_dir, jobs=job, services=service, handle_signals=True,
                           log_format=fmt, console_level=_console_level(quiet, verbose),  # type: ignore[arg-type]
                           **options)
    displays: list[ProgressDisplay] = []

    def progress() -> Callable[[StatsSnapshot], None]:
        if quiet:
            return lambda snap: None
        displays.append(ProgressDisplay(fmt))
        return displays[0]

    try:
        executed = execute(registry_file, batch_file, settings, progress=progress)
    except KeyboardInterrupt:  # before the run started (the pre-flight check)
        return ExitCode.INTERRUPTED
    outcome, result = executed.outcome, executed.result
    for display in displays:
        display.close(outcome.stats)
    if settings.notify:
        notify(executed)
    failed_file = result.failed_jobs_file
    rerun = rerun_args(failed_file, executed.registry.path, default_registry()) if failed_file else None
    print_summary(outcome.results, fmt, failed_file, settings.report_path, rerun_args=rerun,
                  totals=result.totals.to_dict(), exit_code=int(result.exit_code), job_lines=not quiet)
    return outcome.exit_code


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
    click.option("--executor", default="threads", envvar="MODULE_SYSTEM_EXECUTOR", show_default=True,
                 show_envvar=True, metavar="threads|dask-local|dask://HOST:PORT",
                 help="Where jobs run: threads of this process, a Dask LocalCluster on this machine, "
                      "or an existing Dask scheduler (see docs/DASK.md)."),
    _selection_options,
    click.option("--rejected-ok", is_flag=True, default=False,
                 help="Rejected files alone do not make the exit code 1 (the report still counts them)."),
    _verbosity_options,
]


def _with_run_options(fn: F) -> F:
    for option in reversed(_run_options):
        fn = option(fn)
    return fn


@_config_errors_exit_2
def _run(batch_file: Path, **kwargs: Any) -> None:
    sys.exit(int(run_batch(batch_file, **kwargs)))


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="module_system")
def main() -> None:
    """module_system: fetch -> validate -> upload, from many sources to S3.

    Every option may also come from the environment as MODULE_SYSTEM_<OPTION>
    (e.g. MODULE_SYSTEM_MAX_WORKERS=8). Shell completion:
    eval "$(_MODULE_SYSTEM_COMPLETE=bash_source module-system)" (zsh_source, fish_source).
    """


@main.command("run", context_settings=CONTEXT)
@_with_run_options
def run_command(**kwargs: Any) -> None:
    """Run every job of a batch (or those picked with --job / --service)."""
    _run(**kwargs)


@main.command("validate", context_settings=CONTEXT)
@_batch_option
@_registry_option
@_format_option
def validate_command(batch_file: Path, registry_file: Path | None, fmt: str) -> None:
    """Check the registry and the batch; run nothing. Every mistake is listed (up to 20)."""
    try:
        checked = validate(registry_file, batch_file)
    except ConfigError as exc:
        if fmt == "json":
            click.echo(json.dumps({"ok": False, "errors": [_problem_dict(p) for p in exc.problems],
                                   "not_shown": exc.omitted}, indent=1))
        else:
            _echo_config_error(exc)
        sys.exit(ExitCode.USAGE)
    if fmt == "json":
        click.echo(json.dumps({"ok": True, "registry": checked.registry, "services": list(checked.services),
                               "batch": checked.batch, "jobs": list(checked.jobs)}, indent=1))
    else:
        click.echo(printable(f"ok: {checked.registry}: {len(checked.services)} service(s); "
                             f"{checked.batch}: {len(checked.jobs)} job(s)"))


def _problem_dict(problem: ConfigError) -> dict[str, Any]:
    fields = problem.fields
    return {"message": problem.message, "file": fields.get("file"), "service": fields.get("service"),
            "job": fields.get("job"), "key": fields.get("key") or None}


@main.command("plan", context_settings=CONTEXT)
@_batch_option
@_registry_option
@_selection_options
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              envvar="MODULE_SYSTEM_FORMAT",
              help="text: a line per job and the totals; json: every job with its entries.")
@_config_errors_exit_2
def plan_command(batch_file: Path, registry_file: Path | None, job: tuple[str, ...], service: tuple[str, ...],
                 fmt: str) -> None:
    """What a run would do, per job, from the sources' listings; downloads nothing."""
    from orchestrator.plan import ACTIONS

    configure_logging(None, "console", stream=sys.stderr)
    registry, batch = load_config(registry_file, batch_file)
    batch = select_jobs(batch, job, service)
    plans = plan_loaded(registry, batch)
    totals = {a: sum(p.counts()[a] for p in plans) for a in ACTIONS}
    sizes = {a: sum(p.bytes()[a] for p in plans) for a in ACTIONS}
    if fmt == "json":
        click.echo(json.dumps({"batch": str(batch.path), "registry": str(registry.path),
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


@main.command("check", context_settings=CONTEXT)
@click.option("--batch-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Check the services this batch uses (default: every service of the registry).")
@_registry_option
@_format_option
@_config_errors_exit_2
def check_command(batch_file: Path | None, registry_file: Path | None, fmt: str) -> None:
    """Connect once to each source and destination; say, per service, what answers."""
    from orchestrator.check import check_services

    if batch_file is not None:
        registry, batch = load_config(registry_file, batch_file)
        ids = list(dict.fromkeys(job.service_id for job in batch.jobs))
    else:
        registry = load_registry(registry_file or default_registry())
        ids = list(registry.services)
    configure_logging(None, "console", stream=sys.stderr)
    pool = destination_pool(registry, RunOptions())
    try:
        results = check_services((registry.services[i] for i in ids), pool)
    finally:
        pool.close()
    if fmt == "json":
        click.echo(json.dumps({"registry": str(registry.path), "services": [r.to_dict() for r in results]},
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
    fn = _format_option(fn)
    fn = click.option("--history-db", default=None, envvar="MODULE_SYSTEM_HISTORY_DB", show_envvar=True,
                      help="The history database (a SQLAlchemy URL) [default: <state-dir>/history.sqlite3].")(fn)
    return click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("temp"),
                        envvar="MODULE_SYSTEM_STATE_DIR", show_default=True, show_envvar=True,
                        help="The state directory of the runs.")(fn)


@main.command("history", context_settings=CONTEXT)
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


@main.command("show", context_settings=CONTEXT)
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


@main.command("serve", context_settings=CONTEXT)
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

    sys.exit(serve(host, port, registry_file or default_registry(), state_dir, log_dir, history_db,
                   tokens_file, rate_limit, max_workers, monitor_duration))


@main.command("modules", context_settings=CONTEXT)
@click.argument("type_name", metavar="[TYPE]", required=False)
@click.option("--kind", type=click.Choice(["source", "destination", "validator"]), default=None,
              help="With TYPE: only the source module, destination or validator of that name.")
@_format_option
def modules_command(type_name: str | None, kind: str | None, fmt: str) -> None:
    """List installed source modules, destinations and validators with their package and version.

    With TYPE: that plugin's keys, with their types, defaults and descriptions."""
    configure_logging(None, "console")
    catalogs = [(k, c) for k, c in (("source", default_catalog()), ("destination", default_destinations()),
                                    ("validator", default_validators())) if kind in (None, k)]
    if type_name is not None:
        _describe_plugin(type_name, catalogs, fmt)
        return
    broken = False
    listed = []
    for kind_name, catalog in catalogs:
        for info in catalog.describe():
            broken = broken or bool(info.error)
            listed.append({"kind": kind_name, "name": info.name, "package": info.package, "version": info.version,
                           "target": info.target, "error": info.error})
    if fmt == "json":
        click.echo(json.dumps(listed, indent=1))
    for item in listed if fmt == "text" else ():
        line = f"{item['kind']:<12} {item['name']:<12} {item['package']} {item['version']}  ({item['target']})"
        if item["error"]:
            line += f"  UNAVAILABLE: {item['error']}"
        click.echo(printable(line))
    sys.exit(ExitCode.JOBS_FAILED if broken else ExitCode.OK)


#: Per plugin kind: the registry section its keys go in, and the class attribute holding their schema.
_SECTIONS = {"source": ("source", "source_schema"), "destination": ("destination", "config_schema"),
             "validator": ("validate", "validate_schema")}


def _describe_plugin(name: str, catalogs: list[tuple[str, Any]], fmt: str) -> NoReturn:
    """``modules TYPE``: each plugin of that name (a source and a destination may share one)."""
    from common.config_docs import schema_rows

    found: list[dict[str, Any]] = []
    for kind_name, catalog in catalogs:
        for info in catalog.describe():
            if info.name != name:
                continue
            entry: dict[str, Any] = {"kind": kind_name, "name": name, "package": info.package,
                                     "version": info.version, "target": info.target, "error": info.error,
                                     "summary": "", "section": _SECTIONS[kind_name][0], "keys": []}
            if not info.error:
                cls = catalog.load(name)
                entry["summary"] = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
                schema = getattr(cls, _SECTIONS[kind_name][1])
                entry["keys"] = [{"key": key, "type": _plain(kind_text), "default": _plain(default),
                                  "description": description}
                                 for key, kind_text, default, description in schema_rows(schema)]
            found.append(entry)
    if not found:
        known = sorted({n for _, catalog in catalogs for n in catalog.names()})
        click.echo(printable(f"error: no installed plugin is named {name!r}; known: {', '.join(known)}"), err=True)
        sys.exit(ExitCode.USAGE)
    if fmt == "json":
        click.echo(json.dumps(found, indent=1))
    else:
        for entry in found:
            _print_plugin(entry)
    sys.exit(ExitCode.JOBS_FAILED if any(e["error"] for e in found) else ExitCode.OK)


def _print_plugin(entry: dict[str, Any]) -> None:
    click.echo(printable(f"{entry['kind']} {entry['name']}  ({entry['package']} {entry['version']}, "
                         f"{entry['target']})"))
    if entry["error"]:
        click.echo(printable(f"  UNAVAILABLE: {entry['error']}"))
        return
    if entry["summary"]:
        click.echo(printable(f"  {entry['summary']}"))
    click.echo("")
    click.echo(printable(f"  Keys of {entry['section']} (type: {entry['name']}):"))
    for key in entry["keys"]:
        default = f"  [default: {key['default']}]" if key["default"] and key["default"] != "required" else ""
        required = "  [required]" if key["default"] == "required" else ""
        click.echo(printable(f"    {key['key']}  ({key['type']}){required}{default}"))
        if key["description"]:
            click.echo(printable(f"        {key['description']}"))
    click.echo("")


def _plain(markdown: str) -> str:
    """A cell of docs/CONFIGURATION.md as plain text."""
    return markdown.replace("**", "").replace("`` ", "").replace(" ``", "").replace("`", "") \
        .replace("&gt;", ">").replace("&lt;", "<")


@main.command("schema", context_settings=CONTEXT)
@click.option("--registry", "which", flag_value="registry", default=True,
              help="The registry's schema, installed plugins included (the default).")
@click.option("--batch", "which", flag_value="batch", help="The batch file's schema.")
def schema_command(which: str) -> None:
    """Print a JSON Schema (draft 2020-12) for editors: the registry's, or the batch's.

    \b
    module-system schema > registry.schema.json
    then first line of project_registry.yaml:
    # yaml-language-server: $schema=./registry.schema.json
    """
    from common.editor_schema import batch_editor_schema, registry_editor_schema

    configure_logging(None, "console")
    schema = registry_editor_schema() if which == "registry" else batch_editor_schema()
    click.echo(json.dumps(schema, indent=2))


from orchestrator.cli_new_module import new_module_command

new_module_command.context_settings = {**new_module_command.context_settings, **CONTEXT}  # MODULE_SYSTEM_<OPTION>
main.add_command(new_module_command)


@click.command("cli_init", context_settings=CONTEXT)
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
