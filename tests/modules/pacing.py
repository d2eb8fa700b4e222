"""Judging request arrival times against a host's rate limit or politeness delay."""

from __future__ import annotations

import itertools

#: How early an arrival may look against its pacing slot: the server notes arrivals in its
#: own thread, which may run a little late for one request and on time for the next.
ARRIVAL_SLACK_S = 0.03


def assert_spaced(arrivals: list[float], gap: float) -> None:
    """The k-th arrival (by time) is at least k x ``gap`` after the first, and consecutive
    arrivals at least ``gap`` apart, up to ARRIVAL_SLACK_S."""
    times = sorted(arrivals)
    early = [k for k, t in enumerate(times) if t - times[0] < k * gap - ARRIVAL_SLACK_S]
    assert not early, f"arrivals {early} came before k x {gap}s after the first"
    gaps = [round(b - a, 4) for a, b in itertools.pairwise(times)]
    assert min(gaps) >= gap - ARRIVAL_SLACK_S, gaps
