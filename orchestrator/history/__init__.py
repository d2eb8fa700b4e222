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

from orchestrator.history.reader import (
    EventRecord,
    FileRecord,
    HistoryReader,
    JobDetail,
    JobSummary,
    LogPage,
    LogRecord,
    Page,
    RunDetail,
    RunSummary,
    Throughput,
)
from orchestrator.history.store import (
    HistoryStore,
    HistoryUnavailable,
    history_url,
    shown,
)
from orchestrator.history.writer import HistoryRecorder

__all__ = [
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
    "history_url",
    "shown",
]
