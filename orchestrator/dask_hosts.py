"""Per-host connection caps held across a Dask cluster: one ``distributed.Semaphore`` per host.

With ``--executor dask...`` the jobs of one run connect from several processes (the client
admits them, the workers run them), so a host's ``limits.max_connections`` cannot be
counted in one process. :class:`ClusterHostLimiters` keeps the interface of
:class:`~common.host_limiter.HostLimiters` (the job queue and :class:`~common.host_limiter.JobHosts`
use it unchanged) and counts each capped host's connections in a semaphore of the
scheduler named ``module_system/<run_id>/<host>/<cap>``, with ``cap`` leases:

* the client takes one lease per host when it admits a job (``try_acquire``, never waiting)
  and gives it back when the job ends: that is the job's own slot on the worker;
* a worker takes a lease for each further parallel connection of a job (``acquire``) and
  gives it back after it.

So every connection of every job of the run counts against the one cap, wherever it runs.
The cap of a host declared by the run (every source host) is the client's, passed to the
workers; a host first met while crawling is capped by its service's rule. A lease of a
worker that dies is freed by the scheduler after ``distributed.scheduler.locks.lease-timeout``.
Rate and delay (``rate_limit``, ``delay_s``) are paced per process, not across the cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from distributed import Semaphore

from common.exceptions import TransferStopped
from common.host_limiter import HostLimiter, HostLimiters

__all__ = ["ClusterHostLimiter", "ClusterHostLimiters"]

#: How long one wait for a lease lasts before the stop and ``instead`` are looked at again.
_POLL_S = 0.25


class ClusterHostLimiter(HostLimiter):
    """A host's limiter whose connection slots are leases of a cluster-wide semaphore (when capped)."""

    def __init__(self, host: str, stop: threading.Event, semaphore: Callable[[str, int], Any]) -> None:
        super().__init__(host, stop)
        self._semaphore_for = semaphore
        self._semaphore: Any = None
        self._made = threading.Lock()

    def _leases(self) -> Any:
        """The host's semaphore (made with the cap in force at its first use), or None if uncapped."""
        if self.concurrency is None:
            return None
        with self._made:
            if self._semaphore is None:
                self._semaphore = self._semaphore_for(self.host, self.concurrency)
            return self._semaphore

    def try_acquire(self) -> bool:
        leases = self._leases()
        if leases is None:
            return super().try_acquire()
        if not leases.acquire(timeout=0):
            return False
        with self._cond:
            self._take()
        return True

    def available(self) -> bool:
        leases = self._leases()
        if leases is None:
            return super().available()
        return int(leases.get_value()) < int(leases.max_leases)

    def acquire(self, instead: Callable[[], bool] | None = None) -> bool:
        leases = self._leases()
        if leases is None:
            return super().acquire(instead)
        while True:
            if instead is not None and instead():
                return False
            if self._stop.is_set():
                raise TransferStopped(f"stopped while waiting for a connection to {self.host}")
            if leases.acquire(timeout=_POLL_S):
                with self._cond:
                    self._take()
                return True

    def wake(self) -> None:
        return None  # waiters poll the semaphore

    def release(self) -> None:
        leases = self._leases()
        if leases is None:
            super().release()
            return
        with self._cond:
            self._in_use -= 1
        leases.release()

    def close(self, forget: bool = True) -> None:
        """Stop refreshing this process's leases; with ``forget`` (the client, once the run ended)
        also remove the semaphore from the scheduler."""
        with self._made:
            leases, self._semaphore = self._semaphore, None
        if leases is None:
            return
        if forget:
            leases.close()
        else:
            refresh = getattr(leases, "refresh_callback", None)
            if refresh is not None:
                refresh.stop()


class ClusterHostLimiters(HostLimiters):
    """The run's limiters, connection caps counted by the cluster (see the module docstring).

    ``scheduler_rpc`` and ``loop``: the client's or the worker's (``client.scheduler``,
    ``client.loop``); ``caps``: the caps the client declared, applied to each host first.
    """

    def __init__(self, run_id: str, stop: threading.Event, scheduler_rpc: Any, loop: Any,
                 caps: Mapping[str, int] | None = None) -> None:
        super().__init__(stop)
        self.run_id = run_id
        self._rpc, self._loop = scheduler_rpc, loop
        self._caps = dict(caps or {})

    def _make(self, key: str, stop: threading.Event) -> HostLimiter:
        limiter = ClusterHostLimiter(key, stop, self._semaphore)
        if key in self._caps:
            limiter.tighten(self._caps[key])
        return limiter

    def _semaphore(self, host: str, cap: int) -> Any:
        return Semaphore(max_leases=cap, name=f"module_system/{self.run_id}/{host}/{cap}",
                         scheduler_rpc=self._rpc, loop=self._loop)

    def close(self, forget: bool = True) -> None:
        """End the run's use of the semaphores (see :meth:`ClusterHostLimiter.close`)."""
        with self._lock:
            limiters = list(self._limiters.values())
        for limiter in limiters:
            if isinstance(limiter, ClusterHostLimiter):
                try:
                    limiter.close(forget)
                except Exception:  # noqa: BLE001, S110 - the scheduler may be gone; its semaphores with it
                    pass
