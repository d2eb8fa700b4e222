"""Process-wide politeness towards each web host, and one HTTP session per worker thread.

Every request the web module makes (pages and ``robots.txt``) goes through the
:class:`HostGate` of its host (``host:port``), shared by every job of the process:

* at most ``max_connections_per_host`` requests to the host are in flight at once
  (a request holds its slot from sending until its body is read or dropped);
* consecutive request starts to the host are at least ``delay_s`` apart;
* a service with ``rate_limit`` paces each request once it holds its slot, right
  before sending (see :meth:`HostGate.slot`).

Jobs naming different limits for the same host each get their own limit checked
against the shared count, so the strictest job is never exceeded.

Sessions: ``requests.Session`` is not thread-safe, so each worker thread has its own
(:func:`thread_session`), reused by every job that thread runs, which keeps
connections alive between pages and between jobs on the same host.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import requests
import requests.adapters

from modules.redirect_policy import OriginBoundSession

__all__ = ["GateInterrupted", "HostGate", "gate_for", "thread_session"]

#: How often a waiting request looks at the job's stop event, in seconds.
STOP_POLL_S = 0.1
#: Connections kept per host by one thread's session.
POOL_MAXSIZE = 4


class GateInterrupted(Exception):
    """The stop event was set while waiting for a slot: nothing was sent."""


class HostGate:
    """Concurrency limit and request spacing for one host, shared by every job of the process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active = 0
        self._pacing = 0
        """Slot holders still waiting for their service's rate_limit (not yet sent)..."""
        self._pacing_spaced = 0
        """... and those of them keeping a ``delay_s``."""
        self._last_start = float("-inf")

    @property
    def active(self) -> int:
        """Requests in flight now."""
        with self._cond:
            return self._active

    @contextmanager
    def slot(self, limit: int, delay_s: float, stop: threading.Event,
             pace: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold one of ``limit`` slots, ``delay_s`` after the last request start; raises GateInterrupted on stop.

        ``pace`` (the service's ``rate_limit``) is waited for after the slot is taken, right
        before the request is sent, so both spacings hold between actual request starts:
        the start time recorded for ``delay_s`` is the moment pacing ended, and no slot is
        taken while a paced request waits if either of the two keeps a ``delay_s`` (the
        one starting second could not know when the other starts).
        """
        with self._cond:
            while True:
                if stop.is_set():
                    raise GateInterrupted()
                now = time.monotonic()
                wait = self._last_start + delay_s - now
                pacing = self._pacing_spaced if delay_s <= 0 else self._pacing
                free = self._active < limit and pacing == 0
                if free and wait <= 0:
                    break
                self._cond.wait(min(wait if free else STOP_POLL_S, STOP_POLL_S))
            self._active += 1
            self._last_start = now
            if pace is not None:
                self._pacing += 1
                self._pacing_spaced += delay_s > 0
        try:
            if pace is not None:
                try:
                    pace()
                finally:
                    with self._cond:
                        self._pacing -= 1
                        self._pacing_spaced -= delay_s > 0
                        self._last_start = max(self._last_start, time.monotonic())
                        self._cond.notify_all()
                if stop.is_set():  # the pacer returns at once when the run stops
                    raise GateInterrupted()
            yield
        finally:
            with self._cond:
                self._active -= 1
                self._cond.notify_all()


_gates: dict[str, HostGate] = {}
_gates_lock = threading.Lock()
_local = threading.local()


def gate_for(host: str) -> HostGate:
    """The process-wide gate of ``host`` (``host:port``, lower case)."""
    with _gates_lock:
        gate = _gates.get(host)
        if gate is None:
            gate = _gates[host] = HostGate()
        return gate


def thread_session() -> requests.Session:
    """This thread's session, created on first use; never shared with another thread."""
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = OriginBoundSession()  # a cookie goes back only to the origin that set it
        adapter = requests.adapters.HTTPAdapter(pool_connections=16, pool_maxsize=POOL_MAXSIZE, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        _local.session = session
    return session


def _reset_after_fork() -> None:
    # A forked child must not reuse the parent's sockets, nor a lock some other thread held.
    global _gates_lock, _local
    _gates.clear()
    _gates_lock = threading.Lock()
    _local = threading.local()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
