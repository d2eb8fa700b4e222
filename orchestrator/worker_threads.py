"""The executor's worker threads, and the bound on how long a stop may take.

Each worker runs ``work()`` (take a job, run it, take the next) until the queue is empty.
The calling thread waits for them ``refresh_s`` at a time and reports progress in
between. Once the run's ``stop`` event is set (Ctrl-C, SIGTERM, ``--monitor-duration``),
jobs end within moments: the transfer watchdog cuts their remote reads. A job still
running ``grace_s`` seconds after the stop is stuck somewhere nothing can cut (an HTTP
server dripping its response headers, an upload to a destination that never answers, a
plugin that ignores ``ctx.stop``): it is **abandoned**. The workers are daemon threads,
so an abandoned one does not delay the report; threads it started itself (a module's own
pool) are not, so the program entry point ends the process with :func:`exit_if_abandoned`
once the report is written, instead of waiting for them at interpreter exit.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable

import structlog

__all__ = ["STOP_GRACE_S", "exit_if_abandoned", "run_workers"]

log = structlog.get_logger(__name__)

#: Seconds the jobs get to end after the run is stopped; then the run ends without them.
STOP_GRACE_S = 5.0
_abandoned = threading.Event()


def run_workers(count: int, work: Callable[[], None], stop: threading.Event, refresh_s: float,
                on_tick: Callable[[], None], grace_s: float = STOP_GRACE_S) -> bool:
    """Run ``work`` in ``count`` daemon threads until all return; True when some were abandoned
    (still running ``grace_s`` after ``stop`` was set). An exception from ``work`` is re-raised."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, name=f"job_{i}", daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    stopped_at: float | None = None
    while threads:
        threads[0].join(refresh_s)
        threads = [t for t in threads if t.is_alive()]
        on_tick()
        if errors:
            raise errors[0]
        if threads and stop.is_set():
            stopped_at = stopped_at if stopped_at is not None else time.monotonic()
            if time.monotonic() - stopped_at >= grace_s:
                log.error("jobs_abandoned", threads=[t.name for t in threads], grace_s=grace_s)
                _abandoned.set()
                return True
    return False


def exit_if_abandoned(code: object) -> None:
    """End the process now with ``code`` when a run of it abandoned jobs; else return.

    Called by the program entry point after its command finished (report written): the
    threads of an abandoned job (and the pools it started) may never end, and the
    interpreter would wait for them at exit. Logs and standard streams are flushed first.
    """
    if not _abandoned.is_set():
        return
    status = code if isinstance(code, int) else (0 if code is None else 1)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)
