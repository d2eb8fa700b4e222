"""Exclusive locks between processes, held through a lock file.

Runs that share one state directory (``--state-dir``) take a lock before they use
something another run may use at the same time: a multipart upload's resume state
(:mod:`common.multipart_state`), a run's work directory (:mod:`orchestrator.state_dir`).

A lock is ``fcntl.flock`` on an open file (``msvcrt.locking`` on Windows). The OS drops
it when the file is closed or the process ends, however it ends, so a killed run never
leaves a lock behind and nothing has to guess whether its owner is alive.

A holder that releases with ``unlink=True`` removes the lock file while still holding
it, so lock files do not pile up; a process that opened the old file meanwhile sees,
once it gets the lock, that the path no longer names that file (another inode, or none)
and starts over on the new one. On Windows an open file cannot be removed: there the
file stays.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

__all__ = ["FileLock"]

#: Seconds between two tries of a waiting :meth:`FileLock.acquire` (doubling up to the cap).
POLL_S, MAX_POLL_S = 0.02, 0.5


def _try_lock(fd: int) -> bool:
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


class FileLock:
    """An exclusive lock on ``path`` (created when missing). Not reentrant; one holder per object."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        """Take the lock if no one holds it; never waits."""
        assert self._fd is None, "already held"
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                os.close(fd)
                return False
            if sys.platform == "win32" or _same_file(self.path, fd):
                self._fd = fd
                return True
            os.close(fd)  # its holder removed it while we waited: take the file now at the path

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Take the lock, waiting for its holder; returns False (not held) if ``stop`` is set first."""
        wait = POLL_S
        while not self.try_acquire():
            if stop is not None and stop.is_set():
                return False
            (stop or threading.Event()).wait(wait)
            wait = min(wait * 2, MAX_POLL_S)
        return True

    def release(self, unlink: bool = False) -> None:
        """Give the lock up; with ``unlink`` remove the lock file first (no one else is using it)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if unlink and sys.platform != "win32":
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass
        os.close(fd)


def _same_file(path: Path, fd: int) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False
