"""Running one job: module.fetch() -> validate() -> upload -> manifest -> JobResult.

The runner owns every job state. The module only yields files; the runner asks for
the next one only after the previous one is validated and uploaded (or rejected), so
stopping at a file boundary is not asking again. A validation problem is data (the
file goes to the rejected prefix with ``<name>.errors.json``); a file that cannot be
uploaded after retries is ``failed`` and the job goes on; only a source-level failure
fails the job, after the job-level retries and every fallback source.

Keys: a file lands under its prefix plus ``key_name(file.name)`` (distinct names give
distinct keys), and only once the run's :class:`~common.key_claims.KeyClaims` grants the
keys it writes; when it lands, its stale copy under the other prefix (valid vs rejected)
is removed. See docs/KEYS.md. Entries are kept per source attempt (``JobEntries``).
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from common.config_model import DestinationConfig, JobSpec, ServiceConfig
from common.exceptions import ModuleSystemError, is_transient
from common.file_sink import PartHashing
from common.interfaces.base_module import BaseModule, FetchedFile, FetchFailed, JobContext, Unchanged
from common.key_claims import KeyClaims, Owner
from common.logger import JobLogRouter, job_log_name
from common.manifest import FILE_STATUSES, ManifestEntry, load_landed, manifest_key, public_source
from common.plugins import ModuleCatalog
from common.problems import Problem
from common.rate_limit import RatePacer
from common.retry import RetryPolicy
from common.s3_uploader import UploaderPool
from common.safe_names import ERRORS_SUFFIX, file_keys
from common.secret import redact
from common.validators import judge, validators_for
from orchestrator.job_entries import JobEntries
from orchestrator.run_stats import JobStatus, RunStats

MiB = 1024 * 1024
_SEE_MANIFEST = "; see the manifest"

log = structlog.get_logger(__name__)


@dataclass
class RunContext:
    """What every job of one run shares."""

    run_id: str
    started_at: dt.datetime
    catalog: ModuleCatalog
    uploaders: UploaderPool
    stats: RunStats
    router: JobLogRouter
    log_dir: Path
    temp_root: Path
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = "interrupted"
    """``timeout`` (past --monitor-duration) or ``interrupted`` (a signal)."""
    pacers: dict[str, RatePacer] = field(default_factory=dict)
    claims: KeyClaims = field(default_factory=KeyClaims)
    """Which job and source own which destination key in this run (docs/KEYS.md)."""
    _pacers_lock: threading.Lock = field(default_factory=threading.Lock)

    def pacer_for(self, service: ServiceConfig) -> RatePacer | None:
        """The service's shared request pacer (``rate_limit``), or None."""
        if service.requests_per_s is None:
            return None
        with self._pacers_lock:
            if service.service_id not in self.pacers:
                self.pacers[service.service_id] = RatePacer(service.requests_per_s, self.stop)
            return self.pacers[service.service_id]

    def stopped_status(self) -> JobStatus:
        return "timed_out" if self.stop_reason == "timeout" else "cancelled"


@dataclass(frozen=True)
class JobResult:
    job_id: str
    service_id: str
    status: JobStatus
    attempts: int
    files: Mapping[str, int]
    bytes: int
    seconds: float
    error: str | None
    source_used: str | int | None
    started_at: str | None
    finished_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id, "service_id": self.service_id, "status": self.status,
            "attempts": self.attempts, "files": dict(self.files), "bytes": self.bytes,
            "seconds": round(self.seconds, 3), "error": self.error, "source_used": self.source_used,
            "started_at": self.started_at, "finished_at": self.finished_at,
        }


class _Stopped(Exception):
    """The run was stopped; the job ends at this file boundary."""


def not_started(job: JobSpec, status: JobStatus, error: str) -> JobResult:
    """The result of a job that never ran (queued past the deadline or an interrupt)."""
    return JobResult(job.job_id, job.service_id, status, 0, {s: 0 for s in FILE_STATUSES}, 0, 0.0,
                     error, None, None, None)


class JobRunner:
    def __init__(self, run: RunContext, job: JobSpec, service: ServiceConfig) -> None:
        self.run = run
        self.job = job
        self.service = service
        self.entries = JobEntries()
        self.previous: dict[str, ManifestEntry] = {}
        """Landed files of the job's last manifest (incremental services only)."""
        self.attempts = 0
        self.retry = RetryPolicy(
            attempts=service.retry.attempts, backoff_s=service.retry.backoff_s,
            max_backoff_s=service.retry.max_backoff_s, stop=run.stop, counter=run.stats.retried,
        )
        self.uploader = run.uploaders.get(service.destination, service.timeout_s)
        date = run.started_at.strftime("%Y-%m-%d")
        names = {"service_id": service.service_id, "job_id": job.job_id, "run_id": run.run_id, "date": date}
        self.prefix = _as_prefix(service.destination.prefix.format(**names))
        self.rejected_prefix = _as_prefix(service.destination.rejected_prefix.format(**names))

    def run_job(self) -> JobResult:
        """Run the job to a final state; never raises."""
        started, t0 = _now(), time.monotonic()
        status: JobStatus = "failed"
        error: str | None = None
        source_used: str | int | None = None
        try:
            self.run.stats.job_moved("queued", "running")
            log.info("job_started", priority=self.job.priority)
            if self.service.incremental:
                self.previous = load_landed(self.uploader.client, self.service.destination.bucket,
                                            manifest_key(self.service.service_id, self.job.job_id))
                log.debug("previous_manifest_loaded", files=len(self.previous))
            source_used = self._run_sources()
            failed = self.entries.counts()["failed"]
            status = "succeeded" if failed == 0 else "failed"
            if failed:
                error = f"{failed} file(s) failed (not fetched or not uploaded){_SEE_MANIFEST}"
        except _Stopped:
            status = self.run.stopped_status()
            error = "stopped: " + ("monitor duration reached" if status == "timed_out" else "run interrupted")
        except Exception as exc:
            error = _one_line(exc)
            if not isinstance(exc, ModuleSystemError):
                log.error("job_crashed", error=error, exc_info=True)
        finished = _now()
        unwritten = self._write_manifest(status, started, finished, source_used, error)
        if unwritten is not None and error is not None and error.endswith(_SEE_MANIFEST):  # there is none to see
            error = error.removesuffix(_SEE_MANIFEST) + f"; the manifest could not be written either: {unwritten}"
        self.run.stats.job_moved("running", status)
        counts, size = dict(self.entries.counts()), self.entries.uploaded_bytes()
        result = JobResult(self.job.job_id, self.job.service_id, status, self.attempts, counts, size,
                           time.monotonic() - t0, error, source_used, started, finished)
        log.info("job_finished", status=status, files=counts, bytes=size, seconds=round(result.seconds, 3),
                 error=error, source_used=source_used)
        return result

    # ------------------------------------------------------------------ sources

    def _run_sources(self) -> str | int:
        """Try the primary source, then each fallback; job-level retries on each."""
        cls = self.run.catalog.load(self.service.type)
        last: Exception | None = None
        for index, source in enumerate(self.job.sources):
            label: str | int = "primary" if index == 0 else index - 1
            for attempt in range(1, self.service.retry.attempts + 1):
                self.attempts += 1
                self.entries.new_attempt()
                try:
                    self._ingest(cls, source)
                    if index:
                        log.warning("fallback_used", source_used=label, reason=_one_line(last) if last else None)
                    return label
                except _Stopped:
                    raise
                except Exception as exc:
                    if self.run.stop.is_set():  # e.g. TransferStopped: the watchdog cut a read
                        raise _Stopped() from exc
                    last = exc
                    transient = is_transient(exc)
                    log.warning("source_failed", source=label, attempt=attempt, transient=transient,
                                error=_one_line(exc))
                    if not transient or attempt == self.service.retry.attempts:
                        break
                    if self.run.stop.wait(self.retry.delay(attempt, exc)):
                        raise _Stopped() from exc
                    self.run.stats.retried()
        assert last is not None
        raise last

    def _ingest(self, cls: type[BaseModule], source: Mapping[str, Any]) -> None:
        workdir = Path(tempfile.mkdtemp(prefix=f"{self.job.job_id}-", dir=self.run.temp_root))
        ctx = JobContext(
            run_id=self.run.run_id, job_id=self.job.job_id, service_id=self.service.service_id,
            module=self.service.type, validators=validators_for(self.service.validate), retry=self.retry,
            timeout_s=self.service.timeout_s, stop=self.run.stop, max_file_bytes=self.service.max_file_bytes,
            previous={uri: entry.identity for uri, entry in self.previous.items()},
            pacer=pacer.wait if (pacer := self.run.pacer_for(self.service)) else None,
            parts=_part_hashing(self.service.destination),
        )
        module = cls(source, ctx)
        files: Iterator[FetchedFile | FetchFailed | Unchanged] = iter(())
        try:
            files = module.fetch(workdir)
            while True:
                if self.run.stop.is_set():
                    raise _Stopped()
                try:
                    file = next(files)
                except StopIteration:
                    break
                if self.entries.seen(file.source_uri):
                    self._duplicate(file)
                    continue
                if isinstance(file, FetchFailed):
                    self._record(ManifestEntry(file.source_uri, None, 0, "", file.status, (Problem(file.error),)), 0)
                    (log.error if file.status == "failed" else log.warning)(
                        "file_not_fetched", uri=file.source_uri, status=file.status, error=file.error)
                    continue
                if isinstance(file, Unchanged):
                    self._record_unchanged(file)
                    continue
                try:
                    self._handle(module, file)
                finally:
                    file.path.unlink(missing_ok=True)
            if self.run.stop.is_set():
                raise _Stopped()
        finally:
            getattr(files, "close", lambda: None)()
            module.close()
            shutil.rmtree(workdir, ignore_errors=True)

    # ------------------------------------------------------------------ one file

    def _handle(self, module: BaseModule, file: FetchedFile) -> None:
        try:
            problems = module.validate(file)
        except Exception as exc:  # a crashing validator rejects the file, it does not sink the job
            log.error("validator_crashed", uri=file.source_uri, error=_one_line(exc), exc_info=True)
            problems = [Problem(f"validator failed: {_one_line(exc)}")]
        problems, unchecked = judge(problems, file.name, self.service.on_unchecked,
                                    validators_for(self.service.validate).suffixes())
        bucket = self.service.destination.bucket
        try:
            keys = file_keys(file.name, self.prefix, self.rejected_prefix, rejected=bool(problems))
        except ValueError as exc:
            self._record(self._refused(file, str(exc)), file.size)
            return
        refused = self.run.claims.claim(bucket, keys.writes, self._owner(file.source_uri))
        if refused is not None:
            self._record(self._refused(file, refused), file.size)
            return
        if problems:
            key = keys.key
            errors_doc = {"source_uri": file.source_uri, "sha256": file.sha256,
                          "errors": [p.to_dict() for p in problems]}
            try:
                self.uploader.put_file(bucket, key, file.path, file.size, file.sha256, self.retry, md5=file.md5,
                                       part_size=file.part_size, part_sha256=file.part_sha256)
                self.uploader.put_json(bucket, key + ERRORS_SUFFIX, errors_doc, self.retry)
                entry = ManifestEntry(file.source_uri, key, file.size, file.sha256, "rejected",
                                      tuple(problems), file.identity)
                log.info("file_rejected", uri=file.source_uri, key=key, problems=len(problems))
            except ModuleSystemError as exc:
                entry = self._failed(file, exc)
        else:
            key = keys.key
            try:
                outcome = self.uploader.put_file(bucket, key, file.path, file.size, file.sha256, self.retry,
                                                 md5=file.md5, part_size=file.part_size, part_sha256=file.part_sha256)
                entry = ManifestEntry(file.source_uri, key, file.size, file.sha256, outcome.status, (), file.identity,
                                      unchecked)
                log.debug("file_done", uri=file.source_uri, key=key, status=outcome.status, bytes=file.size,
                          unchecked=unchecked)
            except ModuleSystemError as exc:
                entry = self._failed(file, exc)
        if entry.status != "failed":
            entry = self._remove_stale(entry, keys.stale)
        self._record(entry, file.size)

    def _remove_stale(self, entry: ManifestEntry, keys: tuple[str, ...]) -> ManifestEntry:
        """Delete our objects at ``keys``: the copy under the other prefix of a file that just landed.

        A key claimed in this run by another job or source is not ours to clean. A copy that
        cannot be deleted fails the file (so the job is re-run and tries again).
        """
        bucket = self.service.destination.bucket
        for key in keys:
            if self.run.claims.claim(bucket, (key,), self._owner(entry.source_uri)) is not None:
                continue
            try:
                if self.uploader.delete_owned(bucket, key, self.retry):
                    log.info("stale_copy_removed", uri=entry.source_uri, key=key)
            except ModuleSystemError as exc:
                log.error("stale_copy_not_removed", uri=entry.source_uri, key=key, error=_one_line(exc))
                return ManifestEntry(entry.source_uri, entry.key, entry.size, entry.sha256, "failed",
                                     (Problem(f"landed, but its stale copy {key} was not removed: {_one_line(exc)}"),),
                                     entry.identity)
        return entry

    def _record_unchanged(self, file: Unchanged) -> None:
        before = self.previous.get(file.source_uri)
        if before is None:  # a module that yields Unchanged without ctx.unchanged() saying so
            self._record(ManifestEntry(file.source_uri, None, 0, "", "failed",
                                       (Problem("reported unchanged but not in the last manifest"),)), 0)
            return
        assert before.key is not None  # load_landed keeps only entries with a key
        refused = self.run.claims.claim(self.service.destination.bucket, (before.key,), self._owner(file.source_uri))
        if refused is not None:
            log.error("file_key_refused", uri=file.source_uri, error=refused)
            self._record(ManifestEntry(file.source_uri, None, before.size, before.sha256, "failed",
                                       (Problem(refused),), file.identity), 0)
            return
        self._record(ManifestEntry(file.source_uri, before.key, before.size, before.sha256, "skipped_unchanged",
                                   (), file.identity, before.unchecked), before.size)
        log.debug("file_unchanged", uri=file.source_uri, key=before.key)

    def _record(self, entry: ManifestEntry, size: int) -> None:
        self.entries.add(entry)
        self.run.stats.file_done(entry.status, size)

    def _owner(self, source_uri: str) -> Owner:
        return Owner(self.job.job_id, self.entries.attempt, source_uri)

    def _refused(self, file: FetchedFile, reason: str) -> ManifestEntry:
        log.error("file_key_refused", uri=file.source_uri, name=file.name, error=reason)
        return ManifestEntry(file.source_uri, None, file.size, file.sha256, "failed", (Problem(reason),),
                             file.identity)

    def _duplicate(self, file: FetchedFile | FetchFailed | Unchanged) -> None:
        """A second file with a source URI this attempt already handled: not uploaded, ``failed``."""
        if isinstance(file, FetchedFile):
            file.path.unlink(missing_ok=True)
        reason = (f"duplicate source_uri {file.source_uri} (name {file.name!r}): the module yielded it "
                  "more than once; not uploaded")
        log.error("file_duplicate_uri", uri=file.source_uri, name=file.name)
        size, digest = (file.size, file.sha256) if isinstance(file, FetchedFile) else (0, "")
        self._record(ManifestEntry(file.source_uri, None, size, digest, "failed", (Problem(reason),)), size)

    def _failed(self, file: FetchedFile, exc: Exception) -> ManifestEntry:
        log.error("file_failed", uri=file.source_uri, error=_one_line(exc))
        return ManifestEntry(file.source_uri, None, file.size, file.sha256, "failed",
                             (Problem(_one_line(exc)),), file.identity)

    def _write_manifest(self, status: str, started: str, finished: str, source_used: str | int | None,
                        error: str | None) -> str | None:
        """Write the job's manifest; returns None, or why it could not be written."""
        source_index = 0 if source_used in (None, "primary") else int(source_used) + 1
        document = {
            "run_id": self.run.run_id, "job_id": self.job.job_id, "service_id": self.service.service_id,
            "module": self.service.type, "source": public_source(self.job.sources[source_index]),
            "source_used": source_used, "started_at": started, "finished_at": finished,
            "status": status, "error": error, "files": [e.to_dict() for e in self.entries.files],
            "abandoned": [e.to_dict() for e in self.entries.abandoned()],
        }
        key = manifest_key(self.service.service_id, self.job.job_id)
        try:
            self.uploader.put_json(self.service.destination.bucket, key, document, self.retry, skip_same=False)
        except ModuleSystemError as exc:
            log.error("manifest_failed", key=key, error=_one_line(exc))
            return _one_line(exc)
        return None


def _part_hashing(destination: DestinationConfig) -> PartHashing | None:
    """With SHA-256 part checksums, sinks stream the part digests of files that go in parts."""
    if destination.checksum != "sha256":
        return None
    return PartHashing(part_size=destination.multipart_chunksize_mb * MiB,
                       from_bytes=destination.multipart_threshold_mb * MiB)


def job_log_path(run: RunContext, job: JobSpec, service: ServiceConfig) -> Path:
    return run.log_dir / job_log_name(job.job_id, service.service_id, service.type)


def _as_prefix(prefix: str) -> str:
    prefix = prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return redact(text if isinstance(exc, ModuleSystemError) else f"{type(exc).__name__}: {text}")[:500]
