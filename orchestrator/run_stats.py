"""Live counters of a run, shared by the workers and the display."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

JobStatus = Literal["queued", "running", "succeeded", "failed", "timed_out", "cancelled"]
FINAL_STATUSES: tuple[JobStatus, ...] = ("succeeded", "failed", "timed_out", "cancelled")


@dataclass(frozen=True)
class StatsSnapshot:
    submitted: int
    jobs: dict[str, int]
    files: dict[str, int]
    bytes: int
    retries: int
    elapsed_s: float

    @property
    def files_per_s(self) -> float:
        return sum(self.files.values()) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def bytes_per_s(self) -> float:
        return self.bytes / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "submitted": self.submitted, **{f"jobs_{k}": v for k, v in self.jobs.items()},
            **{f"files_{k}": v for k, v in self.files.items()}, "bytes": self.bytes, "retries": self.retries,
            "files_per_s": round(self.files_per_s, 2), "bytes_per_s": round(self.bytes_per_s),
            "elapsed_s": round(self.elapsed_s, 2),
        }


class RunStats:
    """Thread-safe counters: jobs by state, files by status, bytes, retries."""

    def __init__(self, submitted: int) -> None:
        self._lock = threading.Lock()
        self._submitted = submitted
        self._jobs: Counter[str] = Counter({"queued": submitted})
        self._files: Counter[str] = Counter()
        self._bytes = 0
        self._retries = 0
        self._t0 = time.monotonic()

    def job_moved(self, old: JobStatus, new: JobStatus) -> None:
        with self._lock:
            self._jobs[old] -= 1
            self._jobs[new] += 1

    def file_done(self, status: str, size: int) -> None:
        with self._lock:
            self._files[status] += 1
            if status == "uploaded":
                self._bytes += size

    def file_undone(self, status: str, size: int) -> None:
        """Take back a :meth:`file_done` of a job attempt that was lost (its Dask worker died and
        the job runs again elsewhere, counting its files again)."""
        with self._lock:
            self._files[status] -= 1
            if status == "uploaded":
                self._bytes -= size

    def retried(self) -> None:
        with self._lock:
            self._retries += 1

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            jobs: dict[str, int] = {k: self._jobs[k] for k in ("queued", "running", *FINAL_STATUSES)}
            return StatsSnapshot(self._submitted, jobs, dict(self._files), self._bytes, self._retries,
                                 time.monotonic() - self._t0)
