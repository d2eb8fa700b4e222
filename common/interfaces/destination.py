"""Where files land: the destination interface, beside the source modules' one.

A destination is found by its ``type`` under the entry point group
``module_system.destinations`` (built-ins: ``s3``, ``local``, ``sql``) and declares its
registry keys as a JSON Schema (``config_schema``), checked like a source's keys. The
framework owns keys, claims, manifests and the order of things (docs/KEYS.md); a
destination only stores.

Two kinds:

* :class:`FileDestination` (``s3``, ``local``) holds files under keys: valid files, rejected
  files with their ``<name>.errors.json``, and the jobs' manifests (``_manifests/...``). It
  is idempotent (an identical file already at a key is ``skipped_same``), verifies what it
  wrote (sha256), and never overwrites a key half way (a reader sees the old file or the
  new one).
* :class:`RecordDestination` (``sql``) loads the records of valid files (rows), each file
  exactly once (its own load log), all of a file or none of it. Rejected files and
  manifests go to the service's file destinations; a service whose only destination is a
  record destination is a registry error.

One instance serves every job of the run whose configuration is the same (the run's
:class:`DestinationPool` shares them); methods are called from many threads at once.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from common.exceptions import ConfigError, ModuleSystemError, UploadWithdrawn
from common.problems import Problem
from common.retry import RetryPolicy
from common.stream_hooks import StreamHook

if TYPE_CHECKING:
    from common.interfaces.base_module import StoredAt

__all__ = [
    "DESTINATION_GROUP",
    "Column",
    "ColumnType",
    "Destination",
    "DestinationSetup",
    "DestinationUnusable",
    "FileDestination",
    "LandingFile",
    "LoadOutcome",
    "PutStatus",
    "RecordDestination",
    "RecordTarget",
    "RecordsRefused",
]

#: The entry point group of destinations (name = the registry's ``destination.type``).
DESTINATION_GROUP = "module_system.destinations"

PutStatus = Literal["uploaded", "skipped_same"]
ColumnType = Literal["int", "float", "date", "datetime", "str", "bool", "json"]


class DestinationUnusable(ConfigError):
    """The destination cannot be used at all (no such bucket, no permission, a path that is
    not a writable folder, a database that refuses the credentials): the run does not start
    (exit 2) when the pre-flight check raises it. The message is the reason only (one line,
    no secret); the pre-flight adds the registry, the services and :meth:`Destination.describe`."""


class RecordsRefused(ModuleSystemError):
    """The file's records cannot go into the table (a column the table lacks under
    ``schema_evolution: reject``, a value of the wrong type, a missing primary key): the file
    is *rejected* with these problems, not failed, and loads nothing."""

    def __init__(self, message: str, problems: tuple[Problem, ...] = (), **fields: Any) -> None:
        super().__init__(message, **fields)
        self.problems = problems or (Problem(message),)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_refused, (self.message, self.problems, self.fields))


def _rebuild_refused(message: str, problems: tuple[Problem, ...], fields: dict[str, Any]) -> RecordsRefused:
    return RecordsRefused(message, problems, **fields)


@dataclass(frozen=True)
class DestinationSetup:
    """What the run gives every destination it opens."""

    workers: int
    """Jobs running at once (``--max-workers``) times their transfers, capped: size pools to it."""
    timeout_s: float
    """The service's ``timeout_s`` (connect and read)."""
    state_dir: Path
    """A folder of the run's state dir (``<state-dir>/uploads``) for resumable state that
    outlives the run (multipart uploads)."""
    base_dir: Path
    """The registry file's folder: relative paths in the destination's keys resolve against it."""
    shared: dict[Hashable, Any] = field(default_factory=dict)
    """Run-wide objects destinations share (one SQLAlchemy engine per URL...), under ``lock``."""
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class LandingFile:
    """A fetched file, complete on local disk, as a destination receives it."""

    path: Path
    name: str
    """Source-relative name (sub-folders kept), as the module gave it."""
    size: int
    sha256: str
    """Hex SHA-256 of the file's bytes, computed while it streamed."""
    source_uri: str
    """Where it came from (credential-free)."""
    streamed: Mapping[str, Any] = field(default_factory=dict)
    """What this destination's :meth:`Destination.stream_hooks` computed while the file streamed."""
    content_type: str | None = None
    stored_at: StoredAt | None = None
    """Where the source holds the same content, when it is an object store
    (:class:`~common.interfaces.base_module.StoredAt`): a destination on that store may copy it."""


class Destination(ABC):
    """Base of every destination. Subclass :class:`FileDestination` or :class:`RecordDestination`."""

    kind: ClassVar[Literal["files", "records"]]
    config_schema: ClassVar[dict[str, Any]] = {"type": "object", "additionalProperties": False, "properties": {}}
    """JSON Schema of the destination's keys in the registry (``type``, ``name``, ``prefix`` and
    ``rejected_prefix`` are the framework's and are added to it). Defaults are filled from it;
    ``"x-secret": true`` strings arrive as :class:`~common.secret.Secret`."""
    default_name: ClassVar[str] = ""
    """How the manifest names this destination when the registry does not (``name``)."""
    lands_locally: ClassVar[bool] = False
    """Whether landing a file is a local file operation, with no network wait to overlap (the
    ``local`` destination). When every destination of a service says so, a module with a loop of
    its own (``web``, ``api``) has its files validated and landed in the thread that receives
    them, not handed to a lane: for small files the hand-off costs more than the landing."""

    def __init__(self, config: Mapping[str, Any], setup: DestinationSetup) -> None:
        self.config = config
        self.setup = setup

    @classmethod
    def share_key(cls, config: Mapping[str, Any]) -> Hashable:
        """Services whose destination configs give equal keys share one instance in a run."""
        return (cls, tuple(sorted((k, _hashable(v)) for k, v in config.items())))

    @abstractmethod
    def describe(self) -> str:
        """Where this is, without credentials (``s3://bucket``, ``/data/landing``,
        ``postgresql://host/db``): in logs, errors and run-wide key claims."""

    def check(self, retry: RetryPolicy) -> None:
        """Pre-flight, once per run before any job: raise :class:`DestinationUnusable` when
        the run cannot land anything here. A transient problem (a database down) is logged
        and left to the jobs, which fail their files and leave them to the re-run."""

    def stream_hooks(self) -> dict[str, StreamHook]:
        """Digests to compute while each file streams (given back in ``LandingFile.streamed``)."""
        return {}

    def close(self) -> None:
        """End of the run: close clients and pools."""


class FileDestination(Destination):
    kind = "files"

    @abstractmethod
    def put_file(self, key: str, file: LandingFile, retry: RetryPolicy, *, skip_same: bool = True) -> PutStatus:
        """Store ``file`` under ``key`` and verify it; ``skipped_same`` when ``skip_same`` and an
        identical file (same sha256) is there already. Raise an UploadError (transient or not)."""

    @abstractmethod
    def put_json(self, key: str, document: Any, retry: RetryPolicy) -> PutStatus:
        """Store a small JSON document (an errors file) under ``key``, skipped when identical."""

    @abstractmethod
    def delete_owned(self, key: str, retry: RetryPolicy) -> bool:
        """Delete what is at ``key`` if this tool wrote it (a stale copy); return whether it did."""

    @abstractmethod
    def read_json(self, key: str, retry: RetryPolicy) -> Any | None:
        """The JSON document at ``key`` (an earlier manifest), or None when there is none."""

    def lands_ahead_from(self) -> int | None:
        """Files of at least this many bytes may be put before their verdict, through
        :meth:`put_file_ahead`; None (the default): never. When a service lands in this
        destination only, the engine starts such a file's upload as soon as it is fetched and
        validates it meanwhile, so the validation's time overlaps the upload's."""
        return None

    def put_file_ahead(self, key: str, file: LandingFile, retry: RetryPolicy, commit: Callable[[], bool]) -> PutStatus:
        """:meth:`put_file`, but land the file only if ``commit()`` (which blocks until the
        file's verdict) returns True, asking it once the bytes are sent and before they become
        visible under ``key``; on False leave nothing (no object, no upload in progress) and
        raise :class:`~common.exceptions.UploadWithdrawn`. A destination may skip asking when
        nothing is written (``skipped_same``). The engine calls it only when
        :meth:`lands_ahead_from` is set; this default asks first and then puts, which holds the
        promise without the overlap."""
        if not commit():
            raise UploadWithdrawn.of(key)
        return self.put_file(key, file, retry)


@dataclass(frozen=True)
class Column:
    name: str
    type: ColumnType
    required: bool = False


@dataclass(frozen=True)
class RecordTarget:
    """What a record destination needs to know of the job and of the service's records."""

    service_id: str
    job_id: str
    run_id: str
    columns: tuple[Column, ...]
    """The columns the service's ``validate`` section declares (CSV ``columns``/``types``,
    JSON Schema ``properties``/``required``), in order; empty when it declares none."""
    csv_delimiter: str = ","

    def names(self) -> dict[str, str]:
        """Placeholders of templates such as ``table: "{service_id}"``."""
        return {"service_id": self.service_id, "job_id": self.job_id, "run_id": self.run_id}


@dataclass(frozen=True)
class LoadOutcome:
    status: PutStatus
    """``uploaded`` (rows loaded) or ``skipped_same`` (the load log says this file is in already)."""
    rows: int = 0


class RecordDestination(Destination):
    kind = "records"

    @abstractmethod
    def load(self, file: LandingFile, target: RecordTarget, retry: RetryPolicy) -> LoadOutcome:
        """Load every record of ``file`` (valid: it passed validation), in one transaction, unless
        the load log holds it already. Raise :class:`RecordsRefused` for records the table
        cannot take, an UploadError for anything else (transient when retrying may help)."""


def _hashable(value: Any) -> Hashable:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return value  # type: ignore[no-any-return]
