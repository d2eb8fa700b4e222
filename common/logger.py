"""Structured logging: structlog over the standard library's handlers.

Every record is an event dict rendered as one JSON line in the files, bound (by the
executor, inside the worker) with ``run_id``, ``job_id``, ``service_id``, ``module``
and ``thread``. Files under the log dir:

* ``system_orchestrator_job_executor.log``: every record of the run;
* ``{job_id}_{service_id}_{module}.log``: the records of one job, routed by ``job_id``.

``LOG_LEVEL`` (env) sets the level of the files and of JSON console output; the console
in ``console`` format shows warnings and errors only, since the live display owns it,
with every value made printable (:func:`terminal_safe`: a file name's escape sequences
are shown, not obeyed); JSON lines escape control characters by themselves.
Every known secret value is scrubbed from every record (:func:`common.secret.redact`),
and so is every credential inside a URL that a string field quotes (user info passwords,
``?token=``-like query values: :func:`common.secret.redact_url`); tracebacks are rendered
without frame locals.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import traceback
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

from common.secret import MASK, known_secrets, redact_url
from common.terminal_text import printable

__all__ = ["EXECUTOR_LOG", "JobLogRouter", "configure_logging", "configure_worker_logging", "job_log_name", "replay_record"]

EXECUTOR_LOG = "system_orchestrator_job_executor.log"
_QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "werkzeug", "pyftpdlib", "filelock", "paramiko",
                    "distributed")


def job_log_name(job_id: str, service_id: str, module: str) -> str:
    return f"{job_id}_{service_id}_{module}.log"


def redact_secrets(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: replace every known secret value, and every credential inside
    a URL, in string fields."""
    secrets = known_secrets()
    for key, value in event_dict.items():
        event_dict[key] = _scrub(value, secrets)
    return event_dict


def _scrub(value: Any, secrets: frozenset[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        return redact_url(value)
    if isinstance(value, dict):
        return {k: _scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, secrets) for v in value]
    return value


_write_failure_reported = threading.Event()


def _log_write_failed(where: str, exc: BaseException | None) -> None:
    """A log file cannot be written (a full disk): one line on stderr for the whole run, not a
    traceback per record; the records that cannot be written are dropped, the run goes on."""
    if _write_failure_reported.is_set():
        return
    _write_failure_reported.set()
    reason = (exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)) if exc else "unknown"
    sys.stderr.write(f"error: cannot write log file {where}: {reason}; records that cannot be written are dropped\n")


class _FileLog(logging.FileHandler):
    """The run's log file; a record that cannot be written is reported once, not per record."""

    def handleError(self, record: logging.LogRecord) -> None:
        _log_write_failed(self.baseFilename, sys.exc_info()[1])


class JobLogRouter(logging.Handler):
    """Writes each record that carries a ``job_id`` to that job's open log file."""

    def handleError(self, record: logging.LogRecord) -> None:
        _log_write_failed("of a job", sys.exc_info()[1])

    def __init__(self) -> None:
        super().__init__()
        self._files: dict[str, TextIO] = {}
        self._files_lock = threading.Lock()

    def open(self, job_id: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._files_lock:
            self._files[job_id] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close_job

    def close_job(self, job_id: str) -> None:
        with self._files_lock:
            fh = self._files.pop(job_id, None)
        if fh is not None:
            try:
                fh.close()  # flushes: a full disk shows here too
            except OSError as exc:
                _log_write_failed(fh.name, exc)

    def emit(self, record: logging.LogRecord) -> None:
        job_id = record.msg.get("job_id") if isinstance(record.msg, dict) else None
        if job_id is None:
            return
        with self._files_lock:
            fh = self._files.get(job_id)
            if fh is None:
                return
            try:
                fh.write(self.format(record) + "\n")
                fh.flush()
            except Exception:  # noqa: BLE001 - a logging failure must not kill the job
                self.handleError(record)

    def close(self) -> None:
        with self._files_lock:
            for fh in self._files.values():
                try:
                    fh.close()
                except OSError as exc:
                    _log_write_failed(fh.name, exc)
            self._files.clear()
        super().close()


_shared_processors: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def terminal_safe(logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor for the console renderer: every value as printable text.

    Strings go through :func:`~common.terminal_text.printable` (a file name's escape
    sequences are shown, not obeyed); other values are shown as their ``repr``, escaped
    the same way; an exception becomes its ``type: message`` lines (the frames are in the
    JSON log files), since the console renderer cannot print structured exceptions."""
    out: dict[str, Any] = {}
    for key, value in event_dict.items():
        if key == "exc_info":
            key, value = "exception", _exception_lines(value)
        elif key == "exception" and not isinstance(value, str):
            value = "\n".join(f"{e.get('exc_type')}: {e.get('exc_value')}" for e in value if isinstance(e, dict))
        if key == "exception":
            out[key] = printable(str(value), keep_newlines=True)
        elif isinstance(value, str):
            out[key] = printable(value)
        elif value is None or isinstance(value, (bool, int, float)):
            out[key] = value
        else:  # the renderer shows its repr: kept as it is unless that holds a control character
            shown = repr(value)
            safe = printable(shown)
            out[key] = value if safe == shown else safe
    return out


def _exception_lines(exc_info: Any) -> str:
    """``exc_info`` (True, an exception, or a ``sys.exc_info()`` tuple) as a traceback."""
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if not isinstance(exc_info, tuple) or exc_info[0] is None:
        return ""
    return "".join(traceback.format_exception(*exc_info)).rstrip("\n")


def _formatter(renderer: Any, *processors: Any) -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors, redact_secrets],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *processors, renderer],
    )


class _RenderOnce(structlog.stdlib.ProcessorFormatter):
    """The JSON line of a record, rendered by the first handler that asks and reused by the
    others (the run log, the job's log and a JSON console all write the same line).

    A record of ours already carries its finished event dict (the structlog chain ran
    in the caller): it is rendered as it is, without the copy of the record that
    ProcessorFormatter makes; other libraries' records go through ProcessorFormatter."""

    _render = staticmethod(structlog.processors.JSONRenderer())

    def format(self, record: logging.LogRecord) -> str:
        line: str | None = getattr(record, "_ms_json_line", None)
        if line is None:
            if isinstance(record.msg, dict) and hasattr(record, "_logger"):
                line = str(self._render(None, "", dict(record.msg)))
            else:
                line = super().format(record)
            record._ms_json_line = line  # type: ignore[attr-defined]
        return line


def _json_formatter() -> logging.Formatter:
    return _RenderOnce(
        foreign_pre_chain=[*_shared_processors, redact_secrets],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, structlog.processors.JSONRenderer()],
    )


_configured: dict[str, Any] = {}


class _NamedLoggers:
    """structlog's stdlib logger factory, without ``logging.getLogger``'s module-wide lock per event.

    With ``cache_logger_on_first_use`` off, every event asks the factory for its stdlib logger;
    ``logging.getLogger`` takes the logging module's global lock each time, which 16 threads
    logging at once queue on (11% of the api row's busy samples). A stdlib logger of a given name
    is the same object for the life of the process, so it is kept here by name.
    """

    def __init__(self) -> None:
        self._fallback = structlog.stdlib.LoggerFactory()
        self._loggers: dict[str, logging.Logger] = {}

    def __call__(self, *args: Any) -> logging.Logger:
        if not args or not isinstance(args[0], str):
            return self._fallback(*args)
        name = args[0]
        found = self._loggers.get(name)
        if found is None:
            found = self._loggers[name] = logging.getLogger(name)
        return found


def _level() -> int:
    level = logging.getLevelName(os.environ.get("LOG_LEVEL", "INFO").upper())
    return level if isinstance(level, int) else logging.INFO


def configure_logging(log_dir: Path | None, console_format: str = "console", stream: TextIO | None = None,
                      console_level: int | None = None) -> JobLogRouter:
    """Set up structlog and the handlers for one run; returns the per-job router.

    ``console_format`` ``"console"`` or ``"json"``, or ``"off"`` for no console handler at
    all (:func:`module_system.run`: the files only, the embedding program owns its stderr).
    ``console_level`` overrides the console's level (``-q`` / ``-v``).
    Calling it again (a second run in the same process) replaces the previous handlers.
    """
    level = _level()
    json_lines = _json_formatter()  # one instance: each record is rendered once for every handler
    handlers: list[logging.Handler] = []
    if console_format != "off":
        console = logging.StreamHandler(stream or sys.stderr)
        if console_format == "json":
            console.setFormatter(json_lines)
            console.setLevel(level)
        else:
            console.setFormatter(_formatter(structlog.dev.ConsoleRenderer(colors=False), terminal_safe))
            console.setLevel(max(level, logging.WARNING))
        if console_level is not None:
            console.setLevel(console_level)
        handlers.append(console)

    router = JobLogRouter()
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        executor = _FileLog(log_dir / EXECUTOR_LOG, encoding="utf-8")
        handlers += [executor, router]
        for handler in (executor, router):
            handler.setFormatter(json_lines)
            handler.setLevel(level)
    _install(handlers, level)
    return router


def configure_worker_logging(log_dir: Path, level: int, forward: logging.Handler) -> JobLogRouter:
    """Logging in a process that runs jobs for a run elsewhere (a Dask worker): each job's log
    file under ``log_dir`` (where the job runs), and every record handed to ``forward``, which
    sends it to the run's client; no console. ``level``: the client's. Returns the router."""
    json_lines = _json_formatter()
    router = JobLogRouter()
    log_dir.mkdir(parents=True, exist_ok=True)
    for handler in (router, forward):
        handler.setFormatter(json_lines)
        handler.setLevel(level)
    _install([router, forward], level)
    return router


def replay_record(line: str, levelno: int, logger_name: str) -> None:
    """Hand a record rendered elsewhere (its JSON ``line``: a Dask worker's) to this process's
    handlers, as if it were logged here: the run log, the job's log (routed by its ``job_id``)
    and the console show it as they show their own records. The line is written as it came."""
    import json

    try:
        event = json.loads(line)
    except ValueError:
        return
    if not isinstance(event, dict):
        return
    logger = logging.getLogger(logger_name)
    record = logger.makeRecord(logger_name, levelno, "", 0, event, (), None)
    record._ms_json_line = line  # type: ignore[attr-defined]
    record._logger = logger  # type: ignore[attr-defined]  # structlog's marks: render the dict as it is
    record._name = logging.getLevelName(levelno).lower()  # type: ignore[attr-defined]
    logger.handle(record)


def _install(handlers: list[logging.Handler], level: int) -> None:
    """Make ``handlers`` the root logger's (replacing those of a previous call) and configure structlog."""
    root = logging.getLogger()
    for handler in _configured.get("handlers", []):
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(min(h.level for h in handlers) if handlers else level)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)
    _configured["handlers"] = handlers

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False)),
            redact_secrets,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=_NamedLoggers(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger cached on its first use keeps that configuration for the life of
        # the process, so a second run_batch() in one process (or a test's capture_logs after
        # one) would not reach it. The lookup is a dict read per event (_NamedLoggers).
        cache_logger_on_first_use=False,
    )
