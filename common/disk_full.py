"""Telling a full filesystem apart from every other local error, and saying so once.

``ENOSPC`` (no space left) and ``EDQUOT`` (quota exceeded) while a file is written to
the temp dir are not the source's fault and not worth an immediate retry: the file in
hand fails with :class:`~common.exceptions.DiskFullError` and the module goes on (a
smaller file may fit, and space comes back as files are uploaded and removed). The
first time a run meets it on a filesystem, one ``disk_full`` error names the directory
and the space left; further files that fail for it are only recorded as failed.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path

import structlog

from common.exceptions import DiskFullError

__all__ = ["disk_full_error", "is_disk_full"]

log = structlog.get_logger(__name__)

_DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_reported: set[int] = set()
_reported_lock = threading.Lock()


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _DISK_FULL_ERRNOS


def disk_full_error(exc: OSError, name: str, directory: Path, written: int) -> DiskFullError:
    """The DiskFullError for ``exc`` (raised writing the file ``name`` under ``directory``), logged
    once per filesystem."""
    where = os.path.abspath(directory)
    reason = "quota exceeded" if exc.errno == errno.EDQUOT else "no space left"
    _report_once(directory, reason)
    return DiskFullError(f"disk full: {reason} in the temp dir {where} after {written} bytes of {name}",
                         name=name, temp_dir=where)


def _report_once(directory: Path, reason: str) -> None:
    try:
        device = os.stat(directory).st_dev
        free = shutil.disk_usage(directory).free
    except OSError:
        device, free = -1, None
    with _reported_lock:
        if device in _reported:
            return
        _reported.add(device)
    log.error("disk_full", temp_dir=os.path.abspath(directory), reason=reason, free_bytes=free,
              hint="files that do not fit are failed; smaller ones still land")
