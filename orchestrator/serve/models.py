"""The API's request and response bodies (Pydantic): what ``/openapi.json`` describes.

Responses are built from the history reader's frozen dataclasses
(:mod:`orchestrator.history.reader`) with ``from_attributes``; times are ISO 8601 in UTC.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BatchJob", "BatchSubmission", "Error", "EventOut", "EventPage", "FileOut", "FilePage", "Health", "HostLoad",
    "Hosts", "JobDetailOut", "JobOut", "LogPageOut", "LogRecordOut", "RunAccepted", "RunDetailOut", "RunOut",
    "RunPage", "Stats", "ThroughputOut",
]


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Error(BaseModel):
    detail: str = Field(description="What is wrong, in one line.")


class RunOut(_Out):
    run_id: str
    status: Literal["queued", "running", "succeeded", "failed", "interrupted", "cancelled"] = Field(
        description="``queued``: waiting in this server's queue; ``running``; then ``succeeded`` (exit 0), "
                    "``failed`` (exit 1: a job failed or a file was rejected; or the pre-flight refused the "
                    "batch, see ``error``), ``interrupted`` (exit 130) or ``cancelled`` (taken out of the queue).")
    exit_code: int | None = None
    started_at: dt.datetime | None = Field(None, description="None while queued.")
    finished_at: dt.datetime | None = None
    seconds: float | None = None
    batch_file: str
    registry_file: str
    hostname: str | None = None
    pid: int | None = None
    max_workers: int | None = None
    stop_reason: str | None = None
    jobs: dict[str, int] = Field(description="Jobs by status (queued, running, succeeded, failed, timed_out, "
                                             "cancelled); live while the run is in progress.")
    files: dict[str, int] = Field(description="Files by status; the run report's totals once the run is over.")
    bytes: int
    retries: int | None = None
    failed_jobs_file: str | None = None
    report_file: str | None = None
    served: bool = Field(False, description="Started by this server (it can be cancelled here).")
    error: str | None = Field(None, description="Why a run submitted here never started.")


class RunPage(BaseModel):
    items: list[RunOut]
    total: int
    offset: int
    limit: int


class JobOut(_Out):
    id: int = Field(description="The job's id in the history (``/api/v1/jobs/{id}``); ``job_id`` repeats across runs.")
    run_id: str
    job_id: str
    service_id: str
    module: str
    position: int
    priority: int
    status: str
    attempts: int
    source_used: str | None = None
    files: dict[str, int]
    bytes: int
    seconds: float | None = None
    error: str | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    log_file: str | None = None


class EventOut(_Out):
    id: int
    run_id: str
    job_id: str | None = None
    at: dt.datetime
    kind: str
    level: str
    message: str
    fields: dict[str, Any]


class EventPage(BaseModel):
    items: list[EventOut]
    total: int
    offset: int
    limit: int


class ThroughputOut(_Out):
    started_at: dt.datetime | None = None
    bucket_s: float = Field(description="Width of each slice, in seconds.")
    files: list[int] = Field(description="Files finished in each slice.")
    bytes: list[int] = Field(description="Bytes uploaded in each slice.")


class RunDetailOut(BaseModel):
    run: RunOut
    jobs: list[JobOut] = Field(description="In batch order.")
    events: list[EventOut] = Field(description="The run's latest notable events (retries, failures, stops).")
    throughput: ThroughputOut


class FileOut(_Out):
    id: int
    run_id: str
    job_id: str
    attempt: int
    source_uri: str
    key: str | None = None
    status: str
    size: int
    sha256: str
    seconds: float | None = None
    finished_at: dt.datetime
    problems: list[dict[str, Any]]
    unchecked: bool
    destinations: list[dict[str, Any]]


class FilePage(BaseModel):
    items: list[FileOut]
    total: int
    offset: int
    limit: int


class JobDetailOut(BaseModel):
    job: JobOut
    files: FilePage
    events: EventPage


class LogRecordOut(_Out):
    timestamp: str | None = None
    level: str
    event: str
    job_id: str | None = None
    fields: dict[str, Any]


class LogPageOut(BaseModel):
    records: list[LogRecordOut]
    file: str | None = Field(None, description="The log file read; None when the run or job has none on this machine.")
    next_offset: int = Field(description="Pass as ``offset`` to read on.")


class HostLoad(BaseModel):
    run_id: str
    host: str
    in_use: int = Field(description="Connection slots in use now.")
    capacity: int | None = Field(None, description="The host's cap (``limits.max_connections``); None: no cap.")


class Hosts(BaseModel):
    hosts: list[HostLoad] = Field(description="Every host of the runs in progress in this server.")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    history: Literal["ok", "unavailable"]
    version: str
    runs_in_progress: int
    runs_queued: int


class Stats(BaseModel):
    runs: dict[str, int]
    jobs: dict[str, int]
    files: dict[str, int] = Field(description="Files by status over every finished run.")
    bytes: int


class BatchJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    job_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    service_id: str = Field(min_length=1, max_length=200, description="A service of the server's registry.")
    priority: int = Field(5, ge=1, le=10)
    params: dict[str, Any] = Field(default_factory=dict, description="Overrides of the service's source keys.")


class BatchSubmission(BaseModel):
    """A batch, as in a batch file (INTERFACE.md section 3); it runs against the server's registry."""

    model_config = ConfigDict(extra="forbid")
    description: str = Field("", max_length=10_000)
    jobs: list[BatchJob] = Field(min_length=1, max_length=10_000)


class RunAccepted(BaseModel):
    run_id: str
    status: str
    run: str = Field(description="The run's URL in this API.")
    events: str = Field(description="Its event stream.")
