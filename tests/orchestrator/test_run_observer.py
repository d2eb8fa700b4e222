"""The observer fan-out: every observer is told, and one that raises is dropped, never the run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from structlog.testing import capture_logs

from orchestrator.run_observer import ObserverGroup, RunObserver


class Recording(RunObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def job_started(self, job_id: str, at: dt.datetime) -> None:
        self.seen.append(("job_started", job_id))

    def event(self, kind: str, job_id: str | None, level: str, message: str, fields: Mapping[str, Any]) -> None:
        self.seen.append((kind, job_id))


class Broken(RunObserver):
    calls = 0

    def job_started(self, job_id: str, at: dt.datetime) -> None:
        Broken.calls += 1
        raise RuntimeError("disk on fire")


def test_a_raising_observer_is_logged_once_and_left_out() -> None:
    first, second = Recording(), Recording()
    group = ObserverGroup([first, Broken(), second])
    now = dt.datetime.now(dt.timezone.utc)
    with capture_logs() as logs:
        group.job_started("j1", now)
        group.job_started("j2", now)
        group.event("fallback_used", "j2", "warning", "fallback 0 used", {"source_used": 0})
    assert first.seen == second.seen == [("job_started", "j1"), ("job_started", "j2"), ("fallback_used", "j2")]
    assert Broken.calls == 1
    failures = [entry for entry in logs if entry["event"] == "run_observer_failed"]
    assert len(failures) == 1 and failures[0]["observer"] == "Broken" and "disk on fire" in failures[0]["error"]


def test_the_base_observer_ignores_everything() -> None:
    observer = RunObserver()
    observer.job_started("j1", dt.datetime.now(dt.timezone.utc))
    observer.event("retrying", None, "info", "", {})
