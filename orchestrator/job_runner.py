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
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import structlog

from common.archives import archive_suffix, unpack_members
from common.config_model import DestinationSpec, JobSpec, ServiceConfig
from common.exceptions import ModuleSystemError, UploadWithdrawn, is_transient
from common.host_limiter import HostLimiters, JobHosts
from common.interfaces.base_module import (
    BaseModule,
    FetchedFile,
    FetchFailed,
    JobContext,
    Unchanged,
)
from common.interfaces.destination import (
    Destination,
    FileDestination,
    LandingFile,
    PutStatus,
    RecordDestination,
    RecordsRefused,
    RecordTarget,
)
from common.interfaces.file_source import Entry, FailureStreak, FileSource
from common.job_lanes import JobLanes
from common.key_claims import Claims, KeyClaims, Owner
from common.logger import JobLogRouter, job_log_name
from common.manifest import (
    FILE_STATUSES,
    DestinationOutcome,
    FileStatus,
    ManifestEntry,
    landed_files,
    manifest_key,
    merged_state,
    public_source,
    state_cursors,
    state_key_path,
    write_manifest,
)
from common.plugins import ModuleCatalog
from common.problems import Problem
from common.retry import RetryPolicy
from common.run_resources import RunResources
from common.safe_names import ERRORS_SUFFIX, FileKeys, file_keys
from common.secret import redact
from common.stream_hooks import SinkHooks
from common.validators import judge, validators_for
from orchestrator.destination_pool import DestinationPool
from orchestrator.job_entries import JobEntries
from orchestrator.run_observer import RunObserver
from orchestrator.run_stats import JobStatus, RunStats

_SEE_MANIFEST = "; see the manifest"

log = structlog.get_logger(__name__)


@dataclass
class RunContext:
    """What every job of one run shares."""

    run_id: str
    started_at: dt.datetime
    catalog: ModuleCatalog
    destinations: DestinationPool
    stats: RunStats
    router: JobLogRouter
    log_dir: Path
    temp_root: Path
    stop: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = "interrupted"
    """``timeout`` (past --monitor-duration) or ``interrupted`` (a signal)."""
    claims: Claims = field(default_factory=KeyClaims)
    """Which job and source own which destination key in this run (docs/KEYS.md)."""
    limiters: HostLimiters = field(default_factory=HostLimiters)
    """One limiter per host (connections, rate, delay), for every job and module of the run;
    made with the run's ``stop`` by the executor."""
    resources: RunResources = field(default_factory=RunResources)
    """Clients and session pools of the run's modules, closed when the run ends."""
    shared_lock: Callable[[str], AbstractContextManager[Any]] | None = None
    """Where the jobs of the run run in several processes (Dask): the run's lock of a name, held
    across them; None: the run's jobs are threads of this process."""
    observer: RunObserver = field(default_factory=RunObserver)
    """Told every file outcome and notable event (the history, the metrics: orchestrator.run_observer).
    A job run by a Dask worker has none: its files and events are not observed, its result is."""
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _locks_lock: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, name: str) -> AbstractContextManager[Any]:
        """One lock per ``name`` for the run (jobs of one service updating its incremental state)."""
        if self.shared_lock is not None:
            return self.shared_lock(name)
        with self._locks_lock:
            return self._locks.setdefault(name, threading.Lock())

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


class _Lanes:
    """A job's transfers: at most ``width`` tasks in flight; a task's error is raised in the
    submitting thread (at the next submit, or on leaving the block).

    Leaving the block waits for every task submitted, also when the source failed meanwhile
    (what was listed before a listing broke still lands); only a stopping run cancels the
    tasks that have not started. A submit waits for a free lane on a semaphore that each task
    gives back as it ends (no waiting on futures: that costs a lock per task in flight, per file).
    """

    def __init__(self, width: int, name: str, stop: threading.Event) -> None:
        self._width = max(1, width)
        self._pool = JobLanes(self._width, name)
        self._free = threading.Semaphore(self._width)
        self._errors: list[BaseException] = []
        self._stop = stop

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self._free.acquire()
        if self._errors:
            self._free.release()
            raise self._errors[0]
        try:
            self._pool.submit(fn, *args).add_done_callback(self._ended)
        except BaseException:
            self._free.release()
            raise

    def _ended(self, future: Future[None]) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._errors.append(future.exception())  # type: ignore[arg-type]
        self._free.release()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None or not self._stop.is_set():
                for _ in range(self._width):  # every lane given back: every task ended
                    self._free.acquire()
        finally:
            self._pool.close()  # what has not started is cancelled (only on stop); what runs ends first
        if exc_type is None and self._errors:
            raise self._errors[0]  # the error in hand, if any, is the one raised; theirs are in their entries


class _Target:
    """One destination of the job: its spec, the run's instance, and the job's prefixes in it."""

    def __init__(self, index: int, spec: DestinationSpec, dest: Destination, names: Mapping[str, str]) -> None:
        self.index, self.spec, self.dest = index, spec, dest
        self.prefix = _as_prefix(spec.prefix.format(**names)) if spec.prefix else ""
        self.rejected_prefix = _as_prefix(spec.rejected_prefix.format(**names)) if spec.rejected_prefix else ""
        self.scope = f"{spec.type}:{dest.describe()}"
        """Where its keys live, for the run's key claims."""
        self._hooks = f"{index}:"

    @property
    def files(self) -> FileDestination:
        assert isinstance(self.dest, FileDestination)
        return self.dest

    def landing(self, file: FetchedFile, streamed: Mapping[str, Any]) -> LandingFile:
        """``file`` as this destination receives it, with the digests its own hooks computed."""
        mine = {name[len(self._hooks):]: value for name, value in streamed.items() if name.startswith(self._hooks)}
        return LandingFile(file.path, file.name, file.size, file.sha256, file.source_uri, mine,
                           stored_at=file.stored_at)

    def log_fields(self) -> dict[str, str]:
        return {"destination": self.spec.name} if self.index or self.spec.name != self.spec.type else {}


class JobRunner:
    def __init__(self, run: RunContext, job: JobSpec, service: ServiceConfig, hosts: tuple[str, ...] = ()) -> None:
        self.run = run
        self.job = job
        self.service = service
        self.hosts = JobHosts(run.limiters, admitted=hosts, concurrency=service.max_connections,
                              requests_per_s=service.requests_per_s, delay_s=service.delay_s)
        """The job's use of the run's host limiters; ``hosts`` are those the executor admitted it on."""
        self._streak = FailureStreak(service.type)
        self._streak_lock = threading.Lock()
        self.entries = JobEntries()
        self._last_owner: Owner | None = None
        self.previous: dict[str, ManifestEntry] = {}
        """Landed files of the job's last manifest (incremental services only)."""
        self.cursors: dict[str, Any] = {}
        """Watermarks of the service's incremental state (``incremental: true``)."""
        self.advanced: dict[str, Any] = {}
        """Watermarks this job's modules advanced (every attempt and fallback shares it)."""
        self.keeps_state = False
        """The job reads and writes the service's incremental state (``incremental``, or a module
        that keeps cursors: :meth:`BaseModule.keeps_cursors`)."""
        self.attempts = 0
        self.retry = RetryPolicy(
            attempts=service.retry.attempts, backoff_s=service.retry.backoff_s,
            max_backoff_s=service.retry.max_backoff_s, stop=run.stop, counter=run.stats.retried,
            on_retry=self._retried,
        )
        date = run.started_at.strftime("%Y-%m-%d")
        names = {"service_id": service.service_id, "job_id": job.job_id, "run_id": run.run_id, "date": date}
        self.targets = tuple(_Target(index, spec, run.destinations.get(spec, service.timeout_s), names)
                             for index, spec in enumerate(service.destinations))
        self.file_targets = tuple(t for t in self.targets if isinstance(t.dest, FileDestination))
        self.record_targets = tuple(t for t in self.targets if isinstance(t.dest, RecordDestination))
        self.land_inline = all(t.dest.lands_locally for t in self.targets)
        """Every destination lands with local file operations: a module's own loop has its files
        landed as they are received (``Destination.lands_locally``), not in the job's lanes."""
        self.sink_hooks = SinkHooks(self._stream_hooks)
        """The destinations' digests, streamed by every sink the job's module writes."""
        self._record_target: RecordTarget | None = None
        self._ahead: JobLanes | None = None
        """Threads for uploads started before their file's verdict (:meth:`_handle_ahead`), made on first use."""
        self._ahead_lock = threading.Lock()
        self._clock = threading.local()
        """``t0``: when the file the thread handles began (its download), for its duration."""

    def run_job(self) -> JobResult:
        """Run the job to a final state; never raises."""
        started, t0 = _now(), time.monotonic()
        status: JobStatus = "failed"
        error: str | None = None
        source_used: str | int | None = None
        try:
            self.run.stats.job_moved("queued", "running")
            self.run.observer.job_started(self.job.job_id, dt.datetime.fromisoformat(started))
            log.info("job_started", priority=self.job.priority)
            self.keeps_state = self.service.incremental or self.run.catalog.load(self.service.type).keeps_cursors(
                self.job.sources[0])
            if self.keeps_state:
                previous = self._previous_state()
                self.previous = previous if self.service.incremental else {}
            source_used = self._run_sources()
            failed = self.entries.counts()["failed"]
            status = "succeeded" if failed == 0 else "failed"
            if failed:
                error = f"{failed} file(s) failed (not fetched or not uploaded){_SEE_MANIFEST}"
            short = self._too_few_files()
            if short is not None:
                status, error = "failed", short if error is None else f"{short}; {error}"
        except _Stopped:
            status = self.run.stopped_status()
            error = "stopped: " + ("monitor duration reached" if status == "timed_out" else "run interrupted")
        except Exception as exc:
            error = _one_line(exc)
            if not isinstance(exc, ModuleSystemError):
                log.exception("job_crashed", error=error)
        finished = _now()
        unwritten = self._write_manifest(status, started, finished, source_used, error)
        if self.keeps_state:
            self._save_state(self.advanced if status == "succeeded" else None)
        if unwritten is not None and error is not None and error.endswith(_SEE_MANIFEST):  # there is none to see
            error = error.removesuffix(_SEE_MANIFEST) + f"; the manifest could not be written either: {unwritten}"
        self.run.stats.job_moved("running", status)
        counts, size = dict(self.entries.counts()), self.entries.uploaded_bytes()
        result = JobResult(self.job.job_id, self.job.service_id, status, self.attempts, counts, size,
                           time.monotonic() - t0, error, source_used, started, finished)
        log.info("job_finished", status=status, files=counts, bytes=size, seconds=round(result.seconds, 3),
                 error=error, source_used=source_used)
        return result

    def _too_few_files(self) -> str | None:
        """``validate.quality.min_files``: why the job landed too few valid files (uploaded, or
        already there: ``skipped_same``/``skipped_unchanged``), or None."""
        wanted = self.service.validate.min_files
        if not wanted:
            return None
        counts = self.entries.counts()
        landed = counts["uploaded"] + counts["skipped_same"] + counts["skipped_unchanged"]
        if landed >= wanted:
            return None
        log.error("job_too_few_files", landed=landed, min_files=wanted)
        return f"{landed} valid file(s) landed, fewer than validate.quality.min_files ({wanted})"

    # ------------------------------------------------------------------ sources

    def _run_sources(self) -> str | int:
        """Try the primary source, then each fallback, each under the job's retry policy."""
        cls = self.run.catalog.load(self.service.type)
        last: Exception | None = None
        for index, source in enumerate(self.job.sources):
            label: str | int = "primary" if index == 0 else index - 1
            try:
                self.retry.call(self._attempt, cls, source, label, what=f"source {label}")
            except _Stopped:
                raise
            except Exception as exc:
                if self.run.stop.is_set():  # e.g. TransferStopped: the watchdog cut a read
                    raise _Stopped() from exc
                last = exc
                continue
            if index:
                reason = _one_line(last) if last else None
                self._note("warning", "fallback_used", f"fallback source {label} used: {reason}",
                           source_used=label, reason=reason)
            return label
        assert last is not None
        raise last

    def _attempt(self, cls: type[BaseModule], source: Mapping[str, Any], label: str | int) -> None:
        """One try of one source: a new attempt's entries, the module run to its end."""
        self.attempts += 1
        attempt = self.entries.new_attempt()
        try:
            self._ingest(cls, source)
        except _Stopped:
            raise
        except Exception as exc:
            if self.run.stop.is_set():
                raise _Stopped() from exc
            self._note("warning", "source_failed", f"source {label} failed (attempt {attempt}): {_one_line(exc)}",
                       source=label, attempt=attempt, transient=is_transient(exc), error=_one_line(exc))
            raise

    def _ingest(self, cls: type[BaseModule], source: Mapping[str, Any]) -> None:
        workdir = Path(tempfile.mkdtemp(prefix=f"{self.job.job_id}-", dir=self.run.temp_root))
        ctx = JobContext(
            run_id=self.run.run_id, job_id=self.job.job_id, service_id=self.service.service_id,
            module=self.service.type, validators=validators_for(self.service.validate), retry=self.retry,
            timeout_s=self.service.timeout_s, stop=self.run.stop, max_file_bytes=self.service.max_file_bytes,
            previous={uri: entry.identity for uri, entry in self.previous.items()},
            cursors=self.cursors, advanced=self.advanced, sink_hooks=self.sink_hooks,
            transfers=self.service.transfers, hosts=self.hosts, resources=self.run.resources,
        )
        module = cls(source, ctx)
        self._streak = FailureStreak(self.service.type)
        try:
            with _Lanes(self.service.transfers, f"{self.job.job_id}-transfer", self.run.stop) as lanes:
                if isinstance(module, FileSource):
                    self._run_file_source(module, lanes, workdir)
                else:
                    self._run_fetch(module, lanes, workdir)
            if self.run.stop.is_set():
                raise _Stopped()
        finally:
            module.close()
            with self._ahead_lock:
                ahead, self._ahead = self._ahead, None
            if ahead is not None:
                ahead.close()
            shutil.rmtree(workdir, ignore_errors=True)

    def _run_file_source(self, module: FileSource, lanes: _Lanes, workdir: Path) -> None:
        """The file-source template: list, filter, settle, then ``transfers`` downloads at once."""
        order = 0
        for entry in module.list_entries():
            if self.run.stop.is_set():
                raise _Stopped()
            if not module.wanted(entry):
                continue
            order += 1
            if not self.entries.first_sight(entry.source_uri):
                self._duplicate(entry.name, entry.source_uri, order)
                continue
            settled = module.settle(entry)
            if settled is not None:
                self._take(module, settled, order)
                continue
            lanes.submit(self._transfer, module, entry, workdir, order)

    def _transfer(self, module: FileSource, entry: Entry, workdir: Path, order: int) -> None:
        """One lane's work for one entry: download (in a slot of its host), validate, land."""
        if self.run.stop.is_set():
            return
        started = time.monotonic()
        item = module.fetch_entry(entry, workdir)
        if item is not None:
            self._take(module, item, order, count_streak=True, started=started)

    def _run_fetch(self, module: BaseModule, lanes: _Lanes, workdir: Path) -> None:
        """A module with its own loop: what it yields is validated and landed ``transfers`` at once,
        or, when every destination is local (:attr:`land_inline`), as it is received."""
        files = module.fetch(workdir)
        try:
            for order, item in enumerate(files, start=1):
                if self.run.stop.is_set():
                    if isinstance(item, FetchedFile):
                        item.path.unlink(missing_ok=True)
                    raise _Stopped()
                if not self.entries.first_sight(item.source_uri):
                    if isinstance(item, FetchedFile):
                        item.path.unlink(missing_ok=True)
                    self._duplicate(item.name, item.source_uri, order, item)
                elif isinstance(item, FetchedFile) and not self.land_inline:
                    lanes.submit(self._take, module, item, order)
                else:
                    self._take(module, item, order)
        finally:
            getattr(files, "close", lambda: None)()

    def _take(self, module: BaseModule, item: FetchedFile | FetchFailed | Unchanged, order: int,
              count_streak: bool = False, started: float | None = None) -> None:
        """Record what became of one source file (validating and landing a fetched one); ``started``:
        when its download began (else now: a module with its own loop hands it over downloaded)."""
        self._clock.t0 = started if started is not None else time.monotonic()
        if isinstance(item, FetchFailed):
            self._record(ManifestEntry(item.source_uri, None, 0, "", item.status, (Problem(item.error),)), 0, order)
            (log.error if item.status == "failed" else log.warning)(
                "file_not_fetched", uri=item.source_uri, status=item.status, error=item.error)
        elif isinstance(item, Unchanged):
            self._record_unchanged(item, order)
        else:
            try:
                if self.service.unpack and archive_suffix(item.name) is not None:
                    self._unpack(module, item, order)
                else:
                    self._handle(module, item, order)
            finally:
                self.sink_hooks.take(item.path)
                item.path.unlink(missing_ok=True)
        if count_streak and not isinstance(item, Unchanged):
            with self._streak_lock:
                self._streak.saw(item)

    def _unpack(self, module: BaseModule, archive: FetchedFile, order: int) -> None:
        """``unpack: true``: land the archive's members, not the archive, each validated and landed
        as a file of the job before the next is read (:func:`common.archives.unpack_members`)."""
        suffix = archive_suffix(archive.name)
        assert suffix is not None
        members = unpack_members(archive, suffix, self.service.validate.max_expanded_bytes,
                                 lambda name, uri: module.ctx.new_file(archive.path.parent, name, uri, archive.identity))
        try:
            for member in members:
                if isinstance(member, FetchFailed):
                    self._take(module, member, order)
                    continue
                try:
                    if self.run.stop.is_set():
                        raise _Stopped()
                    self._handle(module, member, order)  # a member archive lands as a file: no nesting
                finally:
                    self.sink_hooks.take(member.path)
                    member.path.unlink(missing_ok=True)
        finally:
            members.close()

    # ------------------------------------------------------------------ one file

    def _handle(self, module: BaseModule, file: FetchedFile, order: int) -> None:
        ahead = self._ahead_target(file)
        if ahead is not None:
            self._handle_ahead(module, file, order, *ahead)
            return
        problems, unchecked = self._verdict(module, file)
        self._land_file(file, problems, unchecked, self.sink_hooks.take(file.path), order)

    def _land_file(self, file: FetchedFile, problems: list[Problem], unchecked: bool, streamed: Mapping[str, Any],
                   order: int) -> None:
        """Claim the file's keys, land it in every destination (valid, or rejected with its
        problems) and record its manifest entry."""
        outcomes: list[DestinationOutcome] = []
        keys = self._claim_keys(file, rejected=bool(problems), order=order)
        if keys is None:
            return
        if not problems and self.record_targets:
            problems = self._load_records(file, streamed, outcomes)
            if problems and (keys := self._claim_keys(file, rejected=True, order=order)) is None:
                return
        for target, its_keys in zip(self.file_targets, keys, strict=True):
            outcomes.append(self._land(target, file, its_keys, problems, streamed))
        self._record(self._entry(file, problems, unchecked, keys[0].key, outcomes), file.size, order)

    def _verdict(self, module: BaseModule, file: FetchedFile) -> tuple[list[Problem], bool]:
        """The file's problems (none: valid) and whether no validator checked it."""
        try:
            problems = module.validate(file)
        except Exception as exc:  # a crashing validator rejects the file, it does not sink the job
            log.exception("validator_crashed", uri=file.source_uri, error=_one_line(exc))
            problems = [Problem(f"validator failed: {_one_line(exc)}")]
        return judge(problems, file.name, self.service.on_unchecked, validators_for(self.service.validate).suffixes())

    def _ahead_target(self, file: FetchedFile) -> tuple[_Target, str] | None:
        """The destination that lands ``file`` ahead of its verdict (:meth:`_handle_ahead`), and
        the file's key there if it is valid: the service's only destination, when it lands files
        of this size that way (a name that makes no usable key takes the usual path, which says so)."""
        if len(self.targets) != 1 or not self.file_targets:
            return None
        target = self.file_targets[0]
        threshold = target.files.lands_ahead_from()
        if threshold is None or file.size < threshold:
            return None
        try:
            return target, file_keys(file.name, target.prefix, target.rejected_prefix, rejected=False).key
        except ValueError:
            return None

    def _handle_ahead(self, module: BaseModule, file: FetchedFile, order: int, target: _Target, key: str) -> None:
        """:meth:`_handle` for a large file whose destination can land it ahead of its verdict
        (S3's multipart uploads): its upload to the valid key starts at once, on a thread of its
        own, while this thread validates it; the upload is completed only once the file is valid
        and its key claimed, else withdrawn (aborted: nothing lands) and the file is landed as
        rejected as :meth:`_handle` would. Same outcome, sooner: the validation's time overlaps
        the upload's."""
        streamed = self.sink_hooks.take(file.path)
        verdict: Future[bool] = Future()
        upload = self._ahead_lanes().submit(target.files.put_file_ahead, key, target.landing(file, streamed),
                                            self.retry, verdict.result)
        go = False
        try:
            problems, unchecked = self._verdict(module, file)
            keys = None if problems else self._claim_keys(file, rejected=False, order=order)
            go = keys is not None
        finally:
            verdict.set_result(go)
        if go:
            assert keys is not None
            outcome = self._land(target, file, keys[0], problems, streamed, put=upload.result)
            self._record(self._entry(file, problems, unchecked, keys[0].key, [outcome]), file.size, order)
            return
        try:
            upload.result()
        except UploadWithdrawn:
            pass
        except ModuleSystemError as exc:  # nothing was landed under the valid key
            log.debug("ahead_upload_failed", uri=file.source_uri, error=_one_line(exc))
        if problems:  # not go because of the verdict (else a refused key: recorded)
            self._land_file(file, problems, unchecked, streamed, order)

    def _ahead_lanes(self) -> JobLanes:
        with self._ahead_lock:
            if self._ahead is None:
                self._ahead = JobLanes(self.service.transfers, f"{self.job.job_id}-ahead")
            return self._ahead

    def _claim_keys(self, file: FetchedFile, rejected: bool, order: int) -> list[FileKeys] | None:
        """The file's keys in each file destination, claimed for it; None when a name is unusable
        or a key is another's (the file is then recorded ``failed``)."""
        try:
            keys = [file_keys(file.name, t.prefix, t.rejected_prefix, rejected=rejected) for t in self.file_targets]
        except ValueError as exc:
            self._record(self._refused(file, str(exc)), file.size, order)
            return None
        for target, its_keys in zip(self.file_targets, keys, strict=True):
            refused = self.run.claims.claim(target.scope, its_keys.writes, self._owner(file.source_uri))
            if refused is not None:
                self._record(self._refused(file, refused), file.size, order)
                return None
        return keys

    def _load_records(self, file: FetchedFile, streamed: Mapping[str, Any],
                      outcomes: list[DestinationOutcome]) -> list[Problem]:
        """Load a valid file's records into each record destination; the problems of a destination
        that refuses them (the file is then rejected), else none."""
        for target in self.record_targets:
            records = target.dest
            assert isinstance(records, RecordDestination)
            try:
                loaded = records.load(target.landing(file, streamed), self._records_target(), self.retry)
            except RecordsRefused as exc:
                log.warning("file_records_refused", uri=file.source_uri, destination=target.spec.name,
                            error=_one_line(exc))
                outcomes.append(DestinationOutcome(target.spec.name, "rejected", None, _one_line(exc)))
                return list(exc.problems)
            except ModuleSystemError as exc:
                log.error("file_load_failed", uri=file.source_uri, destination=target.spec.name, error=_one_line(exc))
                outcomes.append(DestinationOutcome(target.spec.name, "failed", None, _one_line(exc)))
                continue
            log.debug("file_loaded", uri=file.source_uri, destination=target.spec.name, status=loaded.status,
                      rows=loaded.rows)
            outcomes.append(DestinationOutcome(target.spec.name, loaded.status, None, None))
        return []

    def _land(self, target: _Target, file: FetchedFile, keys: FileKeys, problems: list[Problem],
              streamed: Mapping[str, Any], put: Callable[[], PutStatus] | None = None) -> DestinationOutcome:
        """Put the file (and a rejected file's errors document) into one file destination, then
        remove its stale copy there. ``put``: how a valid file is put (default ``put_file``;
        :meth:`_handle_ahead` gives the result of the upload it started)."""
        files = target.files
        landing = target.landing(file, streamed)
        try:
            if problems:
                errors_doc = {"source_uri": file.source_uri, "sha256": file.sha256,
                              "errors": [p.to_dict() for p in problems]}
                files.put_file(keys.key, landing, self.retry)
                files.put_json(keys.key + ERRORS_SUFFIX, errors_doc, self.retry)
                status: str = "rejected"
                log.info("file_rejected", uri=file.source_uri, key=keys.key, problems=len(problems),
                         **target.log_fields())
            else:
                status = put() if put is not None else files.put_file(keys.key, landing, self.retry)
                log.debug("file_done", uri=file.source_uri, key=keys.key, status=status, bytes=file.size,
                          **target.log_fields())
        except ModuleSystemError as exc:
            log.error("file_failed", uri=file.source_uri, error=_one_line(exc), **target.log_fields())
            return DestinationOutcome(target.spec.name, "failed", None, _one_line(exc))
        stale = self._remove_stale(target, file.source_uri, keys.stale)
        if stale is not None:
            return DestinationOutcome(target.spec.name, "failed", keys.key, stale)
        return DestinationOutcome(target.spec.name, status, keys.key, None)

    def _entry(self, file: FetchedFile, problems: list[Problem], unchecked: bool, key: str,
               outcomes: list[DestinationOutcome]) -> ManifestEntry:
        """The file's manifest entry from what each destination did: ``failed`` if one failed,
        else ``rejected``, else ``skipped_same`` if every destination had it, else ``uploaded``."""
        failures = [o for o in outcomes if o.status == "failed"]
        per_destination = tuple(outcomes) if len(self.targets) > 1 else ()
        if failures:
            reasons = tuple(Problem(o.error if not per_destination else f"{o.name}: {o.error}")
                            for o in failures if o.error)
            return ManifestEntry(file.source_uri, None, file.size, file.sha256, "failed", reasons, file.identity,
                                 destinations=per_destination)
        if problems:
            return ManifestEntry(file.source_uri, key, file.size, file.sha256, "rejected", tuple(problems),
                                 file.identity, destinations=per_destination)
        status: FileStatus = "skipped_same" if all(o.status == "skipped_same" for o in outcomes) else "uploaded"
        return ManifestEntry(file.source_uri, key, file.size, file.sha256, status, (), file.identity, unchecked,
                             destinations=per_destination)

    def _records_target(self) -> RecordTarget:
        if self._record_target is None:
            from common.records import columns_from_validate

            csv = self.service.validate.csv
            self._record_target = RecordTarget(
                self.service.service_id, self.job.job_id, self.run.run_id, columns_from_validate(self.service.validate),
                csv.delimiter if csv is not None else ",")
        return self._record_target

    def _stream_hooks(self) -> dict[str, Any]:
        return {f"{t.index}:{name}": hook for t in self.targets for name, hook in t.dest.stream_hooks().items()}

    def _remove_stale(self, target: _Target, source_uri: str, keys: tuple[str, ...]) -> str | None:
        """Delete our objects at ``keys`` in ``target``: the copy under the other prefix of a file
        that just landed. None, or why a copy could not be removed (the file then fails, so the
        job is re-run and tries again).

        A key claimed in this run by another job or source is not ours to clean.
        """
        refusals = self.run.claims.claim_each(target.scope, keys, self._owner(source_uri)) if keys else ()
        for key, refused in zip(keys, refusals, strict=True):
            if refused is not None:
                continue
            try:
                if target.files.delete_owned(key, self.retry):
                    log.info("stale_copy_removed", uri=source_uri, key=key, **target.log_fields())
            except ModuleSystemError as exc:
                log.error("stale_copy_not_removed", uri=source_uri, key=key, error=_one_line(exc),
                          **target.log_fields())
                return f"landed, but its stale copy {key} was not removed: {_one_line(exc)}"
        return None

    def _record_unchanged(self, file: Unchanged, order: int) -> None:
        before = self.previous.get(file.source_uri)
        if before is None:  # a module that yields Unchanged without ctx.unchanged() saying so
            self._record(ManifestEntry(file.source_uri, None, 0, "", "failed",
                                       (Problem("reported unchanged but not in the last manifest"),)), 0, order)
            return
        assert before.key is not None  # landed_files keeps only entries with a key
        refused = self.run.claims.claim(self.file_targets[0].scope, (before.key,), self._owner(file.source_uri))
        if refused is not None:
            self._note("error", "file_key_refused", f"{file.source_uri}: {refused}", uri=file.source_uri, error=refused)
            self._record(ManifestEntry(file.source_uri, None, before.size, before.sha256, "failed",
                                       (Problem(refused),), file.identity), 0, order)
            return
        self._record(ManifestEntry(file.source_uri, before.key, before.size, before.sha256, "skipped_unchanged",
                                   (), file.identity, before.unchecked), before.size, order)
        log.debug("file_unchanged", uri=file.source_uri, key=before.key)

    def _record(self, entry: ManifestEntry, size: int, order: int) -> None:
        self.entries.add(entry, order)
        self.run.stats.file_done(entry.status, size)
        t0, self._clock.t0 = getattr(self._clock, "t0", None), None
        self.run.observer.file_done(self.job.job_id, self.entries.attempt, entry,
                                    time.monotonic() - t0 if t0 is not None else None)

    def _note(self, level: str, kind: str, message: str, **fields: Any) -> None:
        """Log a notable event and tell the run's observer (it is kept in the run history)."""
        getattr(log, level)(kind, **fields)
        self.run.observer.event(kind, self.job.job_id, level, message, fields)

    def _retried(self, what: str, attempt: int, reason: str) -> None:
        self.run.observer.event("retrying", self.job.job_id, "info", f"retrying {what or 'a call'} after try "
                                f"{attempt}: {reason}", {"what": what, "attempt": attempt, "reason": reason})

    def _owner(self, source_uri: str) -> Owner:
        """The claims' owner of ``source_uri``'s keys; the last one made is reused (a file's keys
        and its stale copies are claimed by one object, not one each, over 100,000 files)."""
        last = self._last_owner
        if last is not None and last.source_uri == source_uri and last.attempt == self.entries.attempt:
            return last
        self._last_owner = made = Owner(self.job.job_id, self.entries.attempt, source_uri)
        return made

    def _refused(self, file: FetchedFile, reason: str) -> ManifestEntry:
        self._note("error", "file_key_refused", f"{file.source_uri}: {reason}", uri=file.source_uri, name=file.name,
                   error=reason)
        return ManifestEntry(file.source_uri, None, file.size, file.sha256, "failed", (Problem(reason),),
                             file.identity)

    def _duplicate(self, name: str, source_uri: str, order: int,
                   file: FetchedFile | FetchFailed | Unchanged | None = None) -> None:
        """A second file with a source URI this attempt already handled: not uploaded, ``failed``."""
        reason = (f"duplicate source_uri {source_uri} (name {name!r}): the module yielded it "
                  "more than once; not uploaded")
        self._note("error", "file_duplicate_uri", reason, uri=source_uri, name=name)
        size, digest = (file.size, file.sha256) if isinstance(file, FetchedFile) else (0, "")
        self._record(ManifestEntry(source_uri, None, size, digest, "failed", (Problem(reason),)), size, order)

    def _previous_state(self) -> dict[str, ManifestEntry]:
        previous, self.cursors = load_state(self.file_targets[0].files, self.service, self.job.job_id, self.retry)
        log.debug("incremental_state_loaded", files=len(previous), cursors=sorted(self.cursors),
                  state_key=self.service.state_key)
        return previous

    def _save_state(self, cursors: Mapping[str, Any] | None) -> None:
        """Apply this job's files (and ``cursors``: the watermarks it advanced, when it succeeded)
        to the service's incremental state: read, merge, write, under the run's lock for that
        state (jobs of one service in one run take turns). A state that cannot be written is
        logged: the next run then fetches what this one landed again (and skips it as same)."""
        first = self.file_targets[0]
        path = state_key_path(self.service.service_id, self.service.state_key)
        head = {"service_id": self.service.service_id, "state_key": self.service.state_key,
                "run_id": self.run.run_id, "job_id": self.job.job_id}
        with self.run.lock(f"{first.scope}|{path}"):
            try:
                document = merged_state(first.files.read_json(path, self.retry), self.entries.files, head,
                                        cursors)
                first.files.put_json(path, document, self.retry)
            except ModuleSystemError as exc:
                log.error("incremental_state_not_saved", key=path, error=_one_line(exc))

    def _write_manifest(self, status: str, started: str, finished: str, source_used: str | int | None,
                        error: str | None) -> str | None:
        """Write the job's manifest; returns None, or why it could not be written."""
        source_index = 0 if source_used in (None, "primary") else int(source_used) + 1
        head = {
            "run_id": self.run.run_id, "job_id": self.job.job_id, "service_id": self.service.service_id,
            "module": self.service.type, "source": public_source(self.job.sources[source_index]),
            "source_used": source_used, "started_at": started, "finished_at": finished,
            "status": status, "error": error,
        }
        key = manifest_key(self.service.service_id, self.job.job_id)
        # Streamed to a file and uploaded from it: a job's manifest grows with its files.
        fd, name = tempfile.mkstemp(prefix=f"{self.job.job_id}-manifest-", suffix=".json", dir=self.run.temp_root)
        os.close(fd)
        path = Path(name)
        problem = None
        try:
            size, digest = write_manifest(path, head, self.entries.files, self.entries.abandoned())
            manifest = LandingFile(path, key, size, digest, key, content_type="application/json")
            for target in self.file_targets:
                try:
                    target.files.put_file(key, manifest, self.retry, skip_same=False)
                except ModuleSystemError as exc:
                    log.error("manifest_failed", key=key, error=_one_line(exc), **target.log_fields())
                    problem = problem or _one_line(exc)
        except OSError as exc:
            log.error("manifest_failed", key=key, error=_one_line(exc))
            return _one_line(exc)
        finally:
            path.unlink(missing_ok=True)
        return problem


def previous_state(first: FileDestination, service: ServiceConfig, job_id: str,
                   retry: RetryPolicy) -> dict[str, ManifestEntry]:
    """The landed files the service's incremental state holds (``_state/{service_id}/{state_key}.json``
    in its first file destination); before it has one, those of the job's last manifest."""
    return load_state(first, service, job_id, retry)[0]


def load_state(first: FileDestination, service: ServiceConfig, job_id: str,
               retry: RetryPolicy) -> tuple[dict[str, ManifestEntry], dict[str, Any]]:
    """(landed files, cursors) of the service's incremental state (see :func:`previous_state`)."""
    state = first.read_json(state_key_path(service.service_id, service.state_key), retry)
    cursors = state_cursors(state)
    if state is None:
        state = first.read_json(manifest_key(service.service_id, job_id), retry)
    return landed_files(state), cursors


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
