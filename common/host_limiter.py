"""One limiter per host, shared by every job and every module of a run (Scrapy's download slot).

A :class:`HostLimiter` holds three rules for one host (``scheme://host:port``):

* **concurrency**: at most N connections in use at once (``limits.max_connections``, or the
  module's ``default_max_connections``); waiters are served first come, first served, so
  jobs sharing a host share it fairly;
* **rate**: request starts evenly spaced at most ``requests_per_s`` a second (``rate_limit``);
* **delay**: request starts at least ``delay_s`` apart (a politeness delay, web ``delay_s``).

Where services disagree about one host, the strictest rule wins (the smallest concurrency and
rate, the longest delay). A host nobody declared has no limit.

Jobs are admitted by the executor with :meth:`HostLimiters.try_acquire` (one slot on each of
their hosts, all or none, never past a waiting request), and keep that slot while they run:
their first request reuses it (:class:`JobHosts`), further parallel requests wait for a slot
of their own. So a job never waits for a host it was admitted to, a cap lower than the number
of workers cannot deadlock, and the cap counts every connection of every job.

With ``--executor dask...`` the connection caps are counted by the cluster, across worker
processes (``orchestrator.dask_hosts``); rate and delay are paced per process.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

from common.exceptions import TransferStopped

__all__ = ["HostLimiter", "HostLimiters", "JobHosts", "host_of"]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "ftps": 21, "sftp": 22}


def host_of(url_or_host: str) -> str:
    """The limiter key of a URL or host: ``scheme://host:port`` in lower case (default port made
    explicit), or a bare ``host[:port]`` lower-cased when there is no scheme."""
    text = url_or_host.strip()
    if "://" not in text:
        return text.lower()
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        port = None
    return f"{scheme}://{host}:{port}" if port else f"{scheme}://{host}"


class HostLimiter:
    """Concurrency, rate and delay of one host (see the module docstring)."""

    def __init__(self, host: str, stop: threading.Event | None = None) -> None:
        self.host = host
        self.concurrency: int | None = None
        self.requests_per_s: float | None = None
        self.delay_s = 0.0
        self._stop = stop or threading.Event()
        self._cond = threading.Condition()
        self._in_use = 0
        self._peak = 0
        self._waiting: collections.deque[object] = collections.deque()
        self._next_start = 0.0

    def tighten(self, concurrency: int | None = None, requests_per_s: float | None = None,
                delay_s: float = 0.0) -> None:
        """Apply a service's rules; the strictest of all declared wins."""
        with self._cond:
            if concurrency is not None:
                self.concurrency = min(concurrency, self.concurrency or concurrency)
            if requests_per_s is not None:
                self.requests_per_s = min(requests_per_s, self.requests_per_s or requests_per_s)
            self.delay_s = max(self.delay_s, delay_s)

    # ------------------------------------------------------------------ slots

    def _free(self) -> bool:
        return self.concurrency is None or self._in_use < self.concurrency

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits for one."""
        with self._cond:
            if self._waiting or not self._free():
                return False
            self._take()
            return True

    def available(self) -> bool:
        with self._cond:
            return not self._waiting and self._free()

    def acquire(self, instead: Callable[[], bool] | None = None) -> bool:
        """Wait for a slot, first come first served; TransferStopped when the run stops meanwhile.

        ``instead``, tried at every wake-up, may end the wait another way (the job's own slot came
        free: see :class:`JobHosts`); then no slot of the limiter is taken and False is returned.
        """
        ticket = object()
        with self._cond:
            if not self._waiting and self._free():
                self._take()
                return True
            self._waiting.append(ticket)
            try:
                while not (self._waiting[0] is ticket and self._free()):
                    if instead is not None and instead():
                        return False
                    if self._stop.is_set():
                        raise TransferStopped(f"stopped while waiting for a connection to {self.host}")
                    self._cond.wait(0.25)
                self._take()
                return True
            finally:
                self._waiting.remove(ticket)
                self._cond.notify_all()

    def wake(self) -> None:
        """Let the waiters look again (a job's own slot came free)."""
        with self._cond:
            self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self._in_use -= 1
            self._cond.notify_all()

    def _take(self) -> None:
        self._in_use += 1
        self._peak = max(self._peak, self._in_use)

    @property
    def in_use(self) -> int:
        with self._cond:
            return self._in_use

    @property
    def peak(self) -> int:
        """The most slots ever in use at once."""
        with self._cond:
            return self._peak

    # ------------------------------------------------------------------ pacing

    def pace(self) -> None:
        """Wait until one more request may start (rate and delay); returns at once on stop."""
        with self._cond:
            gap = max(1.0 / self.requests_per_s if self.requests_per_s else 0.0, self.delay_s)
            if gap <= 0:
                return
            now = time.monotonic()
            start = max(now, self._next_start)
            self._next_start = start + gap
        if start > now:
            self._stop.wait(start - now)


class HostLimiters:
    """Every host's limiter for one run."""

    def __init__(self, stop: threading.Event | None = None) -> None:
        self._stop = stop or threading.Event()
        self._limiters: dict[str, HostLimiter] = {}
        self._lock = threading.Lock()

    def get(self, host: str) -> HostLimiter:
        key = host_of(host)
        with self._lock:
            limiter = self._limiters.get(key)
            if limiter is None:
                limiter = self._limiters[key] = self._make(key, self._stop)
            return limiter

    def _make(self, key: str, stop: threading.Event) -> HostLimiter:
        """A new host's limiter (a subclass counts connections elsewhere: across Dask workers)."""
        return HostLimiter(key, stop)

    def caps(self) -> dict[str, int]:
        """Each capped host's connection cap, as declared so far."""
        with self._lock:
            limiters = list(self._limiters.values())
        return {limiter.host: limiter.concurrency for limiter in limiters if limiter.concurrency is not None}

    def declare(self, host: str, concurrency: int | None = None, requests_per_s: float | None = None,
                delay_s: float = 0.0) -> None:
        self.get(host).tighten(concurrency, requests_per_s, delay_s)

    # The executor's admission (JobQueue): one slot on each host, all or none.

    def try_acquire(self, hosts: Iterable[str]) -> bool:
        taken: list[HostLimiter] = []
        for host in dict.fromkeys(hosts):
            limiter = self.get(host)
            if not limiter.try_acquire():
                for held in taken:
                    held.release()
                return False
            taken.append(limiter)
        return True

    def available(self, hosts: Iterable[str]) -> bool:
        return all(self.get(h).available() for h in dict.fromkeys(hosts))

    def release(self, hosts: Iterable[str]) -> None:
        for host in dict.fromkeys(hosts):
            self.get(host).release()

    def in_use(self, host: str) -> int:
        return self.get(host).in_use

    def snapshot(self) -> dict[str, tuple[int, int | None]]:
        """Every host known to the run: connection slots in use and its cap (None: no cap)."""
        with self._lock:
            limiters = list(self._limiters.values())
        return {limiter.host: (limiter.in_use, limiter.concurrency) for limiter in limiters}


class JobHosts:
    """One job's use of the run's limiters: the slots it was admitted with serve its own
    requests first; a request beyond them waits for a slot of its own."""

    def __init__(self, limiters: HostLimiters | None = None, admitted: Iterable[str] = (),
                 concurrency: int | None = None, requests_per_s: float | None = None, delay_s: float = 0.0) -> None:
        self.limiters = limiters or HostLimiters()
        self._own = {host_of(h): True for h in admitted}
        self._rules = (concurrency, requests_per_s, delay_s)
        """The service's rules, applied to every host the job reaches (also one found while
        crawling, which the executor could not declare before the job started)."""
        self._declared: set[str] = set()
        self._lock = threading.Lock()

    @contextmanager
    def slot(self, host: str) -> Iterator[None]:
        """Hold one connection to ``host`` for the block, paced by the host's rate and delay.

        Raises TransferStopped when the run stops while waiting.
        """
        key = host_of(host)
        limiter = self.limiters.get(key)
        with self._lock:
            if key not in self._declared:
                self._declared.add(key)
                limiter.tighten(*self._rules)
        # The job's own slot if it is free, else the limiter's next, else whichever comes first:
        # waiting only for the limiter could wait for ever when every slot of the host is some
        # job's own (each job waiting for its other lanes, which wait for a slot).
        own = self._take_own(key) or not limiter.acquire(instead=lambda: self._take_own(key))
        try:
            limiter.pace()
            yield
        finally:
            if own:
                with self._lock:
                    self._own[key] = True
                limiter.wake()
            else:
                limiter.release()

    def _take_own(self, key: str) -> bool:
        with self._lock:
            if self._own.get(key, False):
                self._own[key] = False
                return True
            return False
