"""Pacing requests to a source: ``rate_limit: {requests_per_s: N}`` on a service.

One :class:`RatePacer` per service and run, shared by all its jobs and threads: each
call to :meth:`RatePacer.wait` reserves the next free slot on an evenly spaced
schedule (1/N seconds apart) and sleeps until it, so the source sees at most N requests
in any second without having to answer 429 first.
"""

from __future__ import annotations

import threading
import time


class RatePacer:
    def __init__(self, requests_per_s: float, stop: threading.Event | None = None) -> None:
        self.interval = 1.0 / requests_per_s
        self._next = time.monotonic()
        self._lock = threading.Lock()
        self._stop = stop or threading.Event()

    def reserve(self) -> float:
        """The next free slot (a ``time.monotonic()`` instant), taken for the caller."""
        with self._lock:
            slot = max(time.monotonic(), self._next)
            self._next = slot + self.interval
            return slot

    def wait(self) -> None:
        """Block until this caller may send one request (returns at once when the run stops)."""
        delay = self.reserve() - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)
