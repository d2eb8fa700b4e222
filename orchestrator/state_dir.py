"""The state directory (``--state-dir``, ``$MODULE_SYSTEM_STATE_DIR``, default ``temp``).

What lives there, and who owns it::

    <state-dir>/
      work/<run_id>/            one run's temp files (the job workdirs); that run removes it
      work/<run_id>.lock        held (flock) by that run while it is alive
      uploads/                  resume state of multipart uploads, shared by every run;
                                each upload's file is used under a lock (common.multipart_state)
      failed_jobs_<run_id>.json the jobs of a run that did not succeed (orchestrator.run_report)
      logs/                     the default --log-dir
      history.sqlite3           the run history, unless --history-db (orchestrator.history), with
                                its -wal/-shm files and history.sqlite3.migrate.lock

Several runs may use one state directory at once (two cron entries, a manual run beside
a scheduled one): each works in its own ``work/<run_id>/`` and removes only that. A run
that was killed cannot remove its directory; the next run to start does, once the lock
of the dead run's ``.lock`` file is free (the OS drops it when a process ends, so no pid
is guessed). A directory without a ``.lock`` beside it (the layout before run ids, where
every job workdir sat directly in ``work/``) is removed too: a live run creates its lock
file before its directory and removes its directory before its lock file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import structlog

from common.file_lock import FileLock
from orchestrator.output_paths import check_writable_dir

__all__ = ["RunWorkdir", "check_state_dir"]

log = structlog.get_logger(__name__)


def check_state_dir(root: Path) -> None:
    """Create ``root`` (with parents) or raise ConfigError naming it: the run would fail later."""
    check_writable_dir(root, "--state-dir")  # a probe name of this process's own: runs at once do not race


class RunWorkdir:
    """The work directory of one run, ``<root>/<run_id>/``, held under ``<root>/<run_id>.lock``."""

    def __init__(self, root: Path, run_id: str) -> None:
        self.path = root / run_id
        self._lock = FileLock(root / f"{run_id}.lock")

    @classmethod
    def claim(cls, root: Path, run_id: str) -> RunWorkdir:
        """Make this run's directory (its lock taken first) and remove those of runs that died."""
        root.mkdir(parents=True, exist_ok=True)
        workdir = cls(root, run_id)
        if not workdir._lock.try_acquire():  # run ids are unique: only a clash of two runs in one process
            raise RuntimeError(f"work directory of run {run_id} is in use")
        workdir.path.mkdir(exist_ok=True)
        _remove_abandoned(root, keep=run_id)
        return workdir

    def release(self) -> None:
        """Remove the directory, then its lock file (in this order: see the module docstring)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self._lock.release(unlink=True)


def _remove_abandoned(root: Path, keep: str) -> None:
    removed = 0
    for entry in root.iterdir():
        if entry.name.startswith(keep):
            continue
        if entry.suffix == ".lock" and entry.is_file():
            lock = FileLock(entry)
            if lock.try_acquire():  # its run is gone
                shutil.rmtree(root / entry.stem, ignore_errors=True)
                lock.release(unlink=True)
                removed += 1
        elif entry.is_dir() and not (root / f"{entry.name}.lock").exists():
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    if removed:
        log.info("abandoned_workdirs_removed", count=removed)
