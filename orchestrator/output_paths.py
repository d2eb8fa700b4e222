"""Checks, before any job starts, that the run can write where it was told to.

A run writes its log files under ``--log-dir`` from the start and its report to
``--report`` at the very end; a report path in a directory that cannot be created or
written used to fail only after the whole batch had run (its work done, its summary
lost). Each directory is created if missing and proved writable by creating and
removing a probe file in it, the very operations the run will perform; a failure is a
:class:`~common.exceptions.ConfigError` naming the option (exit 2, nothing runs).
"""

from __future__ import annotations

import os
from pathlib import Path

from common.exceptions import ConfigError

__all__ = ["check_writable_dir", "check_writable_file"]


def check_writable_dir(directory: Path, option: str) -> None:
    """``directory`` exists (created if need be) and a file can be created in it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".module_system_probe_{os.getpid()}"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{option} {directory}: cannot write there: {exc.strerror or exc}",
                          key=option) from None


def check_writable_file(path: Path, option: str) -> None:
    """``path`` can be written at the end of the run: its directory is writable and it is
    not a directory itself."""
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a directory, not a file", key=option)
    check_writable_dir(path.parent, option)
