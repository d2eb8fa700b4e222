"""Clients and sessions kept for one run and closed at its end (no process-wide caches).

* :meth:`RunResources.shared`: one object per key for the whole run, for thread-safe clients
  (a boto3 client per endpoint and credentials).
* :meth:`RunResources.pooled`: objects that one thread uses at a time (a ``requests.Session``
  per host, an FTP connection per host and login): a block checks one out, or makes one, and
  gives it back at its end, so connections are reused across files, requests and jobs. An
  object the block raised through is closed instead of given back (its connection may be
  half-used), unless ``keep_on_error``.

Keys must not hold secrets in clear: wrap them in :class:`~common.secret.Secret`, which
hashes and compares by value but never prints.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import structlog

__all__ = ["RunResources"]

T = TypeVar("T")

log = structlog.get_logger(__name__)


class RunResources:
    def __init__(self) -> None:
        self._shared: dict[Hashable, Any] = {}
        self._idle: defaultdict[Hashable, list[Any]] = defaultdict(list)
        self._out: list[Any] = []
        self._lock = threading.Lock()
        self._closed = False

    def shared(self, key: Hashable, factory: Callable[[], T]) -> T:
        """The run's one object for ``key``, made by ``factory`` on first use."""
        with self._lock:
            if key in self._shared:
                return self._shared[key]  # type: ignore[no-any-return]
        made = factory()  # outside the lock: may connect
        with self._lock:
            kept = self._shared.setdefault(key, made)
        if kept is not made:
            _close(made)
        return kept  # type: ignore[no-any-return]

    @contextmanager
    def pooled(self, key: Hashable, factory: Callable[[], T], keep_on_error: bool = False) -> Iterator[T]:
        """An idle object for ``key`` (or a new one) for the block's own use."""
        with self._lock:
            idle = self._idle[key]
            item = idle.pop() if idle else None
        if item is None:
            item = factory()
        with self._lock:
            self._out.append(item)
        ok = False
        try:
            yield item
            ok = True
        finally:
            with self._lock:
                self._out.remove(item)
                give_back = (ok or keep_on_error) and not self._closed
                if give_back:
                    self._idle[key].append(item)
            if not give_back:
                _close(item)

    def discard(self, key: Hashable) -> None:
        """Close the idle objects of ``key`` (e.g. after the server dropped them all)."""
        with self._lock:
            items = self._idle.pop(key, [])
        for item in items:
            _close(item)

    def close(self) -> None:
        """Close every object the run made; objects still checked out are closed when returned."""
        with self._lock:
            self._closed = True
            items = [*self._shared.values(), *(i for idle in self._idle.values() for i in idle)]
            self._shared.clear()
            self._idle.clear()
        for item in items:
            _close(item)


def _close(item: Any) -> None:
    close = getattr(item, "close", None)
    if callable(close):
        try:
            close()
        except Exception as exc:  # noqa: BLE001 - closing a dead connection must not fail the run
            log.debug("resource_close_failed", error=f"{type(exc).__name__}: {exc}"[:200])
