"""The contract every source module implements.

A module knows how to read one kind of source. It lists the source, streams each file
into ``workdir`` and yields a :class:`FetchedFile` once the file is complete on disk.
Everything else (validation dispatch, upload, manifest, retries around the job, pools,
logs, statistics, job status) belongs to the framework.

The framework pulls from :meth:`BaseModule.fetch` one file at a time: each file is
validated and uploaded before the next is asked for, so memory stays flat and a job
stops at a file boundary simply by not asking again.

A module must never:

* upload anything or import the uploader;
* set a job status or catch-and-swallow a source-level failure (raise a
  :class:`~common.exceptions.SourceError` subclass instead, marked
  :class:`~common.exceptions.Transient` when retrying may help);
* sleep in a loop of its own: wrap each remote call in ``self.ctx.retry.call(...)``;
* log or put secret values in exception messages (``Secret.reveal()`` only where the
  value is handed to the library that needs it).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from common.file_sink import FileSink
from common.host_limiter import JobHosts
from common.job_lanes import JobLanes
from common.problems import Problem
from common.run_resources import RunResources
from common.secret import redact, redact_source_uri

if TYPE_CHECKING:
    from common.retry import RetryPolicy
    from common.stream_hooks import SinkHooks

__all__ = ["BaseModule", "FetchFailed", "FetchedFile", "JobContext", "Problem", "SourceConfig", "StoredAt", "Unchanged",
           "Validators"]

#: The validated, deep-frozen ``source`` a job runs on: the service's ``source`` with the
#: job's ``params`` over it (for a fallback, the fallback entry's own keys win over
#: ``params``). Every key the module's ``source_schema`` gives a default for is present,
#: so modules index it directly.
SourceConfig = Mapping[str, Any]


@dataclass(frozen=True)
class FetchedFile:
    """One source file, complete on disk under the job's workdir."""

    path: Path
    """Local file holding the content (a name of the sink's own, not derived from ``name``)."""
    name: str
    """Source-relative name with ``/`` separators (sub-folders kept), as the source gives it;
    the framework derives the key suffix from it (``common.safe_names.key_name``, docs/KEYS.md)."""
    source_uri: str
    """Where it came from, without credentials (``ftp://host:21/out/a.csv``); one file per URI
    in a job (a second file with the same URI is recorded failed, not uploaded)."""
    size: int
    """Bytes on disk."""
    sha256: str
    """Hex SHA-256 of the content, computed while it was streamed."""
    identity: Mapping[str, str] = field(default_factory=dict)
    """The source's own version marks (ETag, size+mtime, ...), recorded in the manifest."""
    stored_at: StoredAt | None = None
    """Where the content also sits on an object store (an S3 object): a destination on the same
    store may copy it there server-side instead of uploading this local copy."""

    def __post_init__(self) -> None:
        _redact_uri(self)


@dataclass(frozen=True)
class StoredAt:
    """An object on an object store that holds a fetched file's content (the version that was
    read), for a server-side copy (S3 ``CopyObject``): a destination on the same ``store`` copies
    it instead of uploading the local file, and verifies the copy against the sha256 streamed
    (the local file is the one validated); a copy refused or different is uploaded instead."""

    store: str
    """Which store, without credentials: ``s3 <endpoint URL>`` (``s3 aws`` for AWS itself)."""
    bucket: str
    key: str
    etag: str
    """The ETag of the version read (the copy is conditional on it)."""


@dataclass(frozen=True)
class FetchFailed:
    """A source file that could not be read after retries, or that the service refuses
    (``status="rejected"``, e.g. over ``max_file_bytes``). Yield it and go on: the
    framework records it in the manifest while the other files still land. A failed
    file fails the job (and the failed-jobs file re-runs it); a rejected one does not."""

    name: str
    """Source-relative name, as for FetchedFile."""
    source_uri: str
    """Where it was, without credentials."""
    error: str
    """One line: why it could not be read (no secrets)."""
    status: Literal["failed", "rejected"] = "failed"

    def __post_init__(self) -> None:
        _redact_uri(self)
        object.__setattr__(self, "error", redact(self.error))


@dataclass(frozen=True)
class Unchanged:
    """A source file whose identity matches the last run's manifest (``incremental: true``):
    not downloaded, recorded as ``skipped_unchanged``. Yield it when
    :meth:`JobContext.unchanged` says so."""

    name: str
    source_uri: str
    identity: Mapping[str, str]

    def __post_init__(self) -> None:
        _redact_uri(self)


def _redact_uri(item: FetchedFile | FetchFailed | Unchanged) -> None:
    """The root of URL secret redaction: whatever a module put in ``source_uri``, the framework
    (manifest, logs, report, incremental lookups) only ever sees it with the credentials inside
    it masked (:func:`common.secret.redact_source_uri`: user info passwords, and in http(s) URLs
    ``?token=``-like values)."""
    object.__setattr__(item, "source_uri", redact_source_uri(item.source_uri))


class _PreviousByUri(Mapping[str, Mapping[str, str]]):
    """The last manifest's identities, looked up by a source URI with or without its URL
    secrets: the manifest recorded the redacted form, a module may ask with the real one."""

    def __init__(self, entries: Mapping[str, Mapping[str, str]]) -> None:
        self._entries = entries

    def __getitem__(self, uri: str) -> Mapping[str, str]:
        return self._entries[redact_source_uri(uri)]

    def __contains__(self, uri: object) -> bool:
        return isinstance(uri, str) and redact_source_uri(uri) in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


class Validators(Protocol):
    """The service's compiled ``validate`` section, chosen per file by its suffix."""

    def check(self, file: FetchedFile) -> list[Problem] | None:
        """Problems of ``file`` (empty: valid); None when no rule of the service checks it."""


@dataclass(frozen=True)
class JobContext:
    """What a module may use of the framework while it runs one job."""

    run_id: str
    job_id: str
    service_id: str
    module: str
    """The registry ``type`` of the service."""
    validators: Validators
    retry: RetryPolicy
    timeout_s: float
    """Network timeout for one remote operation, in seconds."""
    stop: threading.Event
    """Set when the run is interrupted or past its deadline; check between files."""
    max_file_bytes: int = 5 << 30
    """Files larger than this are refused (``max_file_bytes``); sinks enforce it too."""
    previous: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Source identities (by source URI) from the last manifest when ``incremental`` is on."""
    cursors: Mapping[str, Any] = field(default_factory=dict)
    """Watermarks (name -> JSON value) the service's incremental state kept from the last job that
    succeeded and advanced them (see :meth:`advance_cursor`)."""
    advanced: dict[str, Any] = field(default_factory=dict)
    """The watermarks this job advanced; the framework saves them only if the job succeeds."""
    sink_hooks: SinkHooks | None = None
    """The destination's digests streamed by every sink of the job (set by the runner; modules
    never touch them, see :mod:`common.stream_hooks`)."""

    transfers: int = 1
    """How many files (requests) of this job may be in flight at once (the service's ``transfers``);
    each still takes a connection slot of its host (:meth:`slot`), so the per-host cap holds."""
    hosts: JobHosts = field(default_factory=JobHosts)
    """The run's per-host limiters as this job uses them; use :meth:`slot`."""
    resources: RunResources = field(default_factory=RunResources)
    """The run's clients and session pools (:meth:`RunResources.shared`, :meth:`RunResources.pooled`):
    reuse connections across files and jobs; closed when the run ends."""

    def slot(self, host: str) -> AbstractContextManager[None]:
        """Hold one connection to ``host`` (a URL or ``scheme://host:port``) for the block: waits,
        fairly, while the host's cap is reached, then for its rate limit and politeness delay.
        Wrap every request (or every file's download) in it. Raises TransferStopped on stop."""
        return self.hosts.slot(host)

    def lanes(self) -> JobLanes:
        """``transfers`` threads for this job's own concurrent requests (use as a context manager;
        hold :meth:`slot` inside each task). Modules never start threads of their own."""
        return JobLanes(self.transfers, f"{self.job_id}-lane")

    def __post_init__(self) -> None:
        if not isinstance(self.previous, _PreviousByUri):
            object.__setattr__(self, "previous", _PreviousByUri(self.previous))

    def new_file(self, workdir: Path, name: str, source_uri: str,
                 identity: Mapping[str, str] | None = None) -> FileSink:
        """A hashing sink for ``name``, written to a file of its own under ``workdir``;
        ``sink.finish()`` gives the FetchedFile.

        Writing past ``max_file_bytes`` raises :class:`~common.file_sink.FileTooLarge`.
        """
        hooks = self.sink_hooks
        return FileSink(workdir, name, source_uri, identity or {}, max_bytes=self.max_file_bytes,
                        hooks=hooks.make() if hooks is not None else None,
                        on_finish=hooks.record if hooks is not None else None)

    def advance_cursor(self, name: str, value: Any) -> None:
        """Record the watermark ``name`` this job reached (a JSON value: the newest ``updated_at``
        of the records read, say). Kept in the service's incremental state (``_state/``) when the
        job succeeds, and handed back as ``cursors[name]`` to the next job of the service, as
        dlt's ``incremental`` cursors are; a failed job leaves the stored one as it was."""
        self.advanced[name] = value

    def unchanged(self, source_uri: str, identity: Mapping[str, str]) -> bool:
        """Whether the file at ``source_uri`` is the one the last run recorded.

        ``identity`` holds the marks that define the version (S3 ``etag`` and ``size``,
        FTP ``size`` and ``modify``, HTTP ``etag``...): every one must be present in the
        recorded identity with the same value. Always False when incremental is off.
        """
        before = self.previous.get(source_uri)
        return bool(identity) and before is not None and all(
            k in before and before[k] == str(v) for k, v in identity.items())


class BaseModule(abc.ABC):
    """Base class of source modules, registered under the ``module_system.modules``
    entry point group with the registry ``type`` as name.

    Subclasses declare ``source_schema``: the JSON Schema (draft 2020-12) of their
    ``source`` keys, with defaults. The registry is checked against it before anything
    runs; string properties marked ``"x-secret": true`` are held as
    :class:`~common.secret.Secret` and never printed.
    """

    source_schema: ClassVar[Mapping[str, Any]]
    default_max_connections: ClassVar[int | None] = None
    """Per-host cap on connections in use at once (all jobs and transfers of a run) when a service
    sets no ``limits.max_connections``; None means no cap."""
    default_transfers: ClassVar[int] = 8
    """Files or requests in flight inside one job when the service sets no ``transfers``."""
    supports: ClassVar[frozenset[str]] = frozenset()
    """Service keys the module honours, of ``incremental`` (it yields :class:`Unchanged` when
    :meth:`JobContext.unchanged` says so), ``rate_limit`` and ``delay`` (``limits.delay_s``: every
    request runs in :meth:`JobContext.slot`), ``transfers`` (it runs requests in
    :meth:`JobContext.lanes`). A service setting a key its module does not support is a config
    error. A :class:`~common.interfaces.file_source.FileSource` supports them all."""

    @classmethod
    def hosts(cls, source: SourceConfig) -> tuple[str, ...]:
        """The hosts a job on ``source`` connects to (``"ftp://h:21"``), for per-host limits.

        The executor starts a job only when each of its hosts has a free slot, so a cap
        of N keeps a server at N of this module's jobs (each job holding one session)
        without blocking jobs for other hosts. Default: none, no limit applies.
        """
        return ()

    @classmethod
    def keeps_cursors(cls, source: SourceConfig) -> bool:
        """Whether a job on ``source`` keeps watermarks (:meth:`JobContext.advance_cursor`): the
        framework then reads and writes the service's incremental state even without
        ``incremental: true``. Default: False."""
        return False

    def __init__(self, source: SourceConfig, ctx: JobContext) -> None:
        self.source = source
        self.ctx = ctx

    @abc.abstractmethod
    def fetch(self, workdir: Path) -> Iterator[FetchedFile | FetchFailed | Unchanged]:
        """Stream each source file under ``workdir``; yield it once it is complete on disk.

        Yields files one at a time, in a stable order where the source has one (a module
        that fetches concurrently, like ``api``, may yield in completion order). Raises a ``SourceError``
        (marked ``Transient`` if retrying may help) when the source itself cannot be
        listed or reached: that fails the job (after job-level retries and fallbacks).
        A single file that cannot be read after ``ctx.retry`` is yielded as
        :class:`FetchFailed` instead, so the rest of the job goes on; so is a file the
        sink could not hold (:class:`~common.exceptions.DiskFullError`: not retried).
        Each remote read should run under :func:`common.transfer_watchdog.watch`, so that
        a stalled server or a stopping run cuts it; decorate ``fetch`` with
        :func:`~common.transfer_watchdog.ends_on_stop` to end quietly when that happens.
        The framework may stop iterating at any file boundary; release resources in
        :meth:`close`, which is always called.
        """

    def validate(self, file: FetchedFile) -> list[Problem] | None:
        """Problems found in ``file``; empty when valid; None when nothing could check it.

        Default: the service's ``validate`` section, which gives None for a file whose
        suffix no rule checks (the service's ``on_unchecked`` then accepts or rejects it).
        A module that checks a file itself returns a list, even an empty one.
        """
        return self.ctx.validators.check(file)

    def close(self) -> None:
        """Release connections. Called once when the job ends, however it ends."""
