"""A host limiter's pacing that can judge request arrival times."""

from __future__ import annotations

import threading
import time

from common.host_limiter import HostLimiter

#: Clock tolerance when comparing request arrival times with pacing slots, in seconds.
CLOCK_TOLERANCE_S = 0.002


class RecordingPacer:
    """A host limiter's rate, noting when the first request asked to go.

    The pacer gives each request a slot at least 1/N after the one before, and a request
    never starts before its slot; a request may start late (a thread scheduled late), never
    early. So, whatever the scheduling, the k-th request (from 0, by arrival) arrives at
    least k/N after the first one asked: the lower bound the tests assert. (Consecutive
    gaps alone are not a bound: a request sent late lands close to the next one.)
    """

    def __init__(self, requests_per_s: float) -> None:
        self.per_s = requests_per_s
        self._pacer = HostLimiter("paced")
        self._pacer.tighten(requests_per_s=requests_per_s)
        self.first: float | None = None
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            if self.first is None:
                self.first = time.monotonic()
        self._pacer.pace()

    def assert_paced(self, arrivals: list[float]) -> None:
        assert self.first is not None
        early = [(k, round(a - self.first, 4)) for k, a in enumerate(sorted(arrivals))
                 if a < self.first + k / self.per_s - CLOCK_TOLERANCE_S]
        assert not early, f"(k, seconds after the first request) arriving before k/{self.per_s}s: {early}"
