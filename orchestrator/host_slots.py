"""Per-host connection slots shared by every job of a run.

A job holds one slot on each host it connects to for as long as it runs. The executor
only starts a job whose hosts all have a free slot (:meth:`HostSlots.try_acquire`), so
a job waiting for a busy host never occupies a worker: jobs for other hosts keep
running (no head-of-line blocking), and a cap lower than the number of workers cannot
deadlock. A host's capacity is the smallest ``max_connections`` of the services that
reach it.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable


class HostSlots:
    def __init__(self) -> None:
        self._capacity: dict[str, int] = {}
        self._used: Counter[str] = Counter()
        self._lock = threading.Lock()

    def declare(self, host: str, capacity: int | None) -> None:
        """Cap ``host`` at ``capacity`` slots (None: no cap); the smallest cap declared wins."""
        if capacity is None:
            return
        with self._lock:
            self._capacity[host] = min(capacity, self._capacity.get(host, capacity))

    def try_acquire(self, hosts: Iterable[str]) -> bool:
        """Take one slot on each capped host in ``hosts``, all or none."""
        capped = [h for h in set(hosts) if h in self._capacity]
        with self._lock:
            if any(self._used[h] >= self._capacity[h] for h in capped):
                return False
            self._used.update(capped)
            return True

    def available(self, hosts: Iterable[str]) -> bool:
        """Would :meth:`try_acquire` succeed now?"""
        with self._lock:
            return all(self._used[h] < self._capacity[h] for h in set(hosts) if h in self._capacity)

    def release(self, hosts: Iterable[str]) -> None:
        capped = [h for h in set(hosts) if h in self._capacity]
        with self._lock:
            self._used.subtract(capped)

    def in_use(self, host: str) -> int:
        with self._lock:
            return self._used[host]
