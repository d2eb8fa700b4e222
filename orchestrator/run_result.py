"""The run report as typed, frozen objects: what :func:`module_system.run` returns.

:class:`RunResult` holds exactly what ``--report FILE`` writes (INTERFACE section 6):
``RunResult.to_dict()`` is that JSON document, key for key, and :meth:`RunResult.from_dict`
reads one back (a report file, or a run's report built by
:func:`orchestrator.run_report.build_report`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

from orchestrator.exit_codes import ExitCode

__all__ = ["FileCounts", "JobCounts", "JobSummary", "RunResult", "Totals"]

JobFinalStatus = Literal["succeeded", "failed", "timed_out", "cancelled"]


@dataclass(frozen=True)
class FileCounts:
    """Files by status (a job's, or the run's)."""

    uploaded: int = 0
    """Landed in every destination by this run."""
    skipped_same: int = 0
    """Already there with the same content: not uploaded again."""
    skipped_unchanged: int = 0
    """Unchanged at the source since the last run (``incremental: true``): not fetched."""
    rejected: int = 0
    """Failed validation (or too large): landed under the rejected prefix with its errors."""
    failed: int = 0
    """Could not be fetched or landed, after retries."""

    @property
    def landed(self) -> int:
        """Files the destinations hold: uploaded, skipped as the same, skipped as unchanged."""
        return self.uploaded + self.skipped_same + self.skipped_unchanged

    def to_dict(self) -> dict[str, int]:
        return {"uploaded": self.uploaded, "skipped_same": self.skipped_same,
                "skipped_unchanged": self.skipped_unchanged, "rejected": self.rejected, "failed": self.failed}

    @classmethod
    def from_dict(cls, counts: Mapping[str, int]) -> FileCounts:
        return cls(**{name: int(counts.get(name, 0)) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class JobCounts:
    """Jobs by final status."""

    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    cancelled: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"succeeded": self.succeeded, "failed": self.failed, "timed_out": self.timed_out,
                "cancelled": self.cancelled}

    @classmethod
    def from_dict(cls, counts: Mapping[str, int]) -> JobCounts:
        return cls(**{name: int(counts.get(name, 0)) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Totals:
    """The run's totals."""

    jobs: JobCounts
    files: FileCounts
    bytes: int
    """Bytes uploaded."""
    retries: int
    """Retries of remote calls and of jobs."""

    def to_dict(self) -> dict[str, Any]:
        return {"jobs": self.jobs.to_dict(), "files": self.files.to_dict(), "bytes": self.bytes,
                "retries": self.retries}

    @classmethod
    def from_dict(cls, totals: Mapping[str, Any]) -> Totals:
        return cls(JobCounts.from_dict(totals["jobs"]), FileCounts.from_dict(totals["files"]),
                   int(totals["bytes"]), int(totals["retries"]))


@dataclass(frozen=True)
class JobSummary:
    """One job of the run, in batch order."""

    job_id: str
    service_id: str
    status: JobFinalStatus
    attempts: int
    """Tries of the job (job-level retries and fallbacks included); 0 if it never started."""
    files: FileCounts
    bytes: int
    seconds: float
    error: str | None
    """A one-line message when the job did not succeed (no secrets), else None."""
    source_used: str | int | None
    """``"primary"``, the 0-based index of the fallback that served the job, or None."""
    started_at: str | None
    finished_at: str | None

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    def to_dict(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "service_id": self.service_id, "status": self.status,
                "attempts": self.attempts, "files": self.files.to_dict(), "bytes": self.bytes,
                "seconds": self.seconds, "error": self.error, "source_used": self.source_used,
                "started_at": self.started_at, "finished_at": self.finished_at}

    @classmethod
    def from_dict(cls, job: Mapping[str, Any]) -> JobSummary:
        return cls(job_id=job["job_id"], service_id=job["service_id"], status=cast(JobFinalStatus, job["status"]),
                   attempts=int(job["attempts"]), files=FileCounts.from_dict(job["files"]), bytes=int(job["bytes"]),
                   seconds=float(job["seconds"]), error=job["error"], source_used=job["source_used"],
                   started_at=job.get("started_at"), finished_at=job.get("finished_at"))


@dataclass(frozen=True)
class RunResult:
    """A finished run: what ``--report`` writes, typed."""

    run_id: str
    started_at: dt.datetime
    finished_at: dt.datetime
    exit_code: ExitCode
    """What the CLI would exit with: 0 ok, 1 a job did not succeed or a file was rejected
    (unless ``rejected_ok``), 130 interrupted."""
    batch_file: str
    """The batch's path (``<batch>`` for a batch given as a mapping)."""
    failed_jobs_file: Path | None
    """The failed-jobs file (batch format: re-runs exactly the jobs that did not succeed), or None."""
    totals: Totals
    jobs: tuple[JobSummary, ...]

    @property
    def ok(self) -> bool:
        """Every job succeeded and nothing counted against the exit code."""
        return self.exit_code == ExitCode.OK

    @property
    def failed_jobs(self) -> tuple[JobSummary, ...]:
        """The jobs that did not succeed (failed, timed out or cancelled)."""
        return tuple(job for job in self.jobs if not job.succeeded)

    def job(self, job_id: str) -> JobSummary:
        """The job ``job_id``; KeyError if the run had none by that id."""
        for job in self.jobs:
            if job.job_id == job_id:
                return job
        raise KeyError(job_id)

    def to_dict(self) -> dict[str, Any]:
        """The run report, as ``--report`` writes it."""
        return {
            "run_id": self.run_id,
            "started_at": self.started_at.isoformat(timespec="milliseconds"),
            "finished_at": self.finished_at.isoformat(timespec="milliseconds"),
            "exit_code": int(self.exit_code),
            "batch_file": self.batch_file,
            "failed_jobs_file": str(self.failed_jobs_file) if self.failed_jobs_file else None,
            "totals": self.totals.to_dict(),
            "jobs": [job.to_dict() for job in self.jobs],
        }

    @classmethod
    def from_dict(cls, report: Mapping[str, Any]) -> RunResult:
        """A report document (``--report`` file) as a RunResult."""
        failed = report.get("failed_jobs_file")
        return cls(run_id=report["run_id"], started_at=dt.datetime.fromisoformat(report["started_at"]),
                   finished_at=dt.datetime.fromisoformat(report["finished_at"]),
                   exit_code=ExitCode(int(report["exit_code"])), batch_file=str(report["batch_file"]),
                   failed_jobs_file=Path(failed) if failed else None, totals=Totals.from_dict(report["totals"]),
                   jobs=tuple(JobSummary.from_dict(job) for job in report["jobs"]))
