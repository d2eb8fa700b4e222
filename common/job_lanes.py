"""A job's lanes: ``ctx.transfers`` threads for the requests of one job, owned by the framework.

A module with a loop of its own (a crawl frontier, endpoints paginated side by side) submits
work with :meth:`JobLanes.submit`; each task runs with the job's log context (job_id,
service_id...) and should hold ``ctx.slot(url)`` around its request, so that the per-host cap,
rate and delay hold however wide the lanes are. Leaving the ``with`` block cancels what has not
started and waits for what has (a stopping run cuts their reads through the watchdog).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Self, TypeVar

__all__ = ["JobLanes"]

T = TypeVar("T")


class JobLanes:
    def __init__(self, width: int, name: str) -> None:
        self.width = max(1, width)
        self._pool = ThreadPoolExecutor(self.width, thread_name_prefix=name)

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        context = contextvars.copy_context()
        return self._pool.submit(context.run, fn, *args, **kwargs)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
