"""What watches a run besides the live display: the run history and the Prometheus metrics.

:func:`history_target` turns the run's history settings into where to record it (checked before
anything runs: a bad ``--history-db`` is a ConfigError); :func:`run_watchers` makes the run's
:class:`~orchestrator.run_observer.ObserverGroup`, starts the metrics server, and on leaving
writes the history's last rows and stops the server. See docs/HISTORY.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.run_observer import ObserverGroup, RunObserver

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from orchestrator.history.writer import HistoryRecorder

__all__ = ["history_target", "run_watchers"]


def history_target(record: bool, history_db: str | None, state_dir: Path) -> URL | str | None:
    """Where the run is recorded: None (not recorded), the ``history_db`` URL (checked now: a
    ConfigError naming ``--history-db``), or the state dir's SQLite file as text (SQLAlchemy is
    then first imported by the history's writer thread, not before the run starts)."""
    if not record:
        return None
    if history_db:
        from orchestrator.history.store import history_url

        return history_url(history_db, state_dir)
    from orchestrator.history import default_history_url

    return default_history_url(state_dir)


@contextmanager
def run_watchers(history: URL | str | None, metrics_port: int | None,
                 others: Sequence[RunObserver] = ()) -> Iterator[tuple[ObserverGroup, HistoryRecorder | None]]:
    """The run's observers: ``others``, the metrics served on 127.0.0.1:``metrics_port`` (a port
    that cannot be bound is a ConfigError here, before the run) and the history recorder."""
    observers = ObserverGroup(others)
    server = None
    if metrics_port is not None:
        from orchestrator.run_metrics import RunMetrics, serve_metrics

        metrics = RunMetrics()
        server = serve_metrics(metrics.registry, metrics_port)
        observers.add(metrics)
    recorder = None
    if history is not None:
        from orchestrator.history.writer import HistoryRecorder

        recorder = HistoryRecorder(history)
        observers.add(recorder)
    try:
        yield observers, recorder
    finally:
        if recorder is not None:
            recorder.close()
        if server is not None:
            server.close()
