"""Exit codes of ``run`` (INTERFACE section 4)."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    """Every job succeeded and no file was rejected."""
    JOBS_FAILED = 1
    """The run finished; a job failed or timed out, or files were rejected."""
    USAGE = 2
    """The run did not start: usage, registry or batch error."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C / SIGTERM."""
