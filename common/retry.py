"""The retry policy: attempts, exponential backoff with jitter, one classification.

Registry keys (``retry`` on ``defaults`` or a service): ``attempts`` (total tries,
including the first), ``backoff_s`` (first delay), ``max_backoff_s`` (cap).
Whether an error is worth retrying is decided by :func:`common.exceptions.is_transient`
alone. An exception with a ``retry_after`` attribute (seconds, e.g. from HTTP
``Retry-After``) sets the next delay, capped by ``max_backoff_s``.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from common.exceptions import is_transient

T = TypeVar("T")
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    stop: threading.Event | None = None
    """When set, waiting stops early and the last error is raised."""
    counter: Callable[[], None] | None = field(default=None, compare=False)
    """Called once per retry (the job's retry statistics)."""
    on_retry: Callable[[str, int, str], None] | None = field(default=None, compare=False)
    """Called once per retry with what is retried, the try that failed (from 1) and why (the run history)."""

    def delay(self, attempt: int, exc: BaseException | None = None) -> float:
        """Seconds to wait before try ``attempt + 1`` (``attempt`` counts from 1): a random
        delay between half and all of ``backoff_s * 2**(attempt-1)``, capped ("equal jitter")."""
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, (int, float)) and retry_after >= 0:
            return min(float(retry_after), self.max_backoff_s)
        ceiling = min(self.max_backoff_s, self.backoff_s * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)

    def call(self, fn: Callable[..., T], *args: object, what: str = "", **kwargs: object) -> T:
        """``fn(*args, **kwargs)``, retried on transient errors up to ``attempts`` tries."""
        attempt = 1
        while True:
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                if attempt >= self.attempts or not is_transient(exc):
                    if attempt > 1:
                        log.warning("retry_gave_up", what=what, attempts=attempt, error=_short(exc))
                    raise
                wait = self.delay(attempt, exc)
                log.debug("retrying", what=what, attempt=attempt, wait_s=round(wait, 3), reason=_short(exc))
                if self.counter is not None:
                    self.counter()
                if self.on_retry is not None:
                    self.on_retry(what, attempt, _short(exc))
                if self.stop is not None:
                    if self.stop.wait(wait):
                        raise
                else:
                    threading.Event().wait(wait)
                attempt += 1


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:300]
