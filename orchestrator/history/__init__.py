"""Run history: every ``run`` records its jobs, files and notable events in a database.

* :mod:`~orchestrator.history.models`: the tables (SQLAlchemy Core); ``migrations/``: Alembic.
* :mod:`~orchestrator.history.store`: the URL (``--history-db``, default ``<state-dir>/history.sqlite3``),
  the engine, the schema upgraded on open.
* :mod:`~orchestrator.history.writer`: :class:`HistoryRecorder`, the run observer that writes
  through one background thread, in batches; a database that fails is a warning, never a failed run.
* :mod:`~orchestrator.history.reader`: :class:`HistoryReader`, typed paged queries (``history``,
  ``show``, and ``serve``'s API).

See docs/HISTORY.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DEFAULT_FILE = "history.sqlite3"
"""The history database of a state dir, when ``--history-db`` is not given."""
HEAD = "0001"
"""The newest migration (``migrations/versions``): a database there is not migrated again, and
Alembic is not even imported; nor for a new database, created from the models and stamped with
it (a test keeps this equal to Alembic's head)."""

_EXPORTS = {
    "EventRecord": "reader", "FileRecord": "reader", "HistoryReader": "reader", "JobDetail": "reader",
    "JobSummary": "reader", "LogPage": "reader", "LogRecord": "reader", "Page": "reader", "RunDetail": "reader",
    "RunSummary": "reader", "Throughput": "reader",
    "HistoryStore": "store", "HistoryUnavailable": "store", "history_url": "store", "shown": "store",
    "HistoryRecorder": "writer",
}

__all__ = [
    "DEFAULT_FILE",
    "EventRecord",
    "FileRecord",
    "HistoryReader",
    "HistoryRecorder",
    "HistoryStore",
    "HistoryUnavailable",
    "JobDetail",
    "JobSummary",
    "LogPage",
    "LogRecord",
    "Page",
    "RunDetail",
    "RunSummary",
    "Throughput",
    "default_history_url",
    "history_url",
    "shown",
]


def default_history_url(state_dir: Path) -> str:
    """The URL of ``<state_dir>/history.sqlite3`` (as text: making it imports nothing)."""
    return f"sqlite:///{(state_dir / DEFAULT_FILE).resolve()}"


def __getattr__(name: str) -> Any:
    """The names of the submodules, imported on first use: a run imports SQLAlchemy in the
    history's writer thread, not before it starts."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
