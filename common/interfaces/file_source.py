"""The file-source template: a module lists entries and downloads one; the framework does the rest.

A source of files (a bucket, an FTP tree, a folder) implements two methods, as fsspec's
``_ls``/``_open`` give ``find``/``glob``/``get`` for free:

* :meth:`FileSource.list_entries`: every file of the source, as :class:`Entry` (name, URI,
  size, version marks), in a stable order;
* :meth:`FileSource.download`: stream one entry into a sink.

The framework (``orchestrator.job_runner``) then does, the same way for every such module,
built-in or plugin: the filters (keys added to the module's ``source_schema``: ``include``/
``exclude`` globs on the base name or the relative path, ``min_size``/``max_size``,
``newer_than``/``older_than``; :meth:`FileSource.wanted`), ``max_file_bytes`` (on the listed size and while streaming: the file is
``rejected``, the job goes on), incremental skips (``incremental: true``: an entry whose
``identity`` matches the last manifest is not downloaded), per-file retries
(``retry``; the sink starts over unless the module is ``resumable``), the cut-off after
:data:`MAX_FAILURES_IN_A_ROW` files fail in a row (the source is down: the job's source fails
and job-level retries and fallbacks apply), stop at a file boundary, ``transfers`` files in
flight at once, each download holding a connection slot of its host (so ``limits`` and
``rate_limit`` hold), and the manifest in listing order.

:meth:`FileSource.fetch` runs the same steps one file at a time, for tools and tests that
drive a module directly.
"""

from __future__ import annotations

import abc
import datetime as dt
import fnmatch
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import structlog

from common.exceptions import (
    ConfigError,
    DiskFullError,
    ModuleSystemError,
    SourceError,
    TransferStopped,
    TransientSourceError,
)
from common.file_sink import FileSink, FileTooLarge
from common.interfaces.base_module import (
    BaseModule,
    FetchedFile,
    FetchFailed,
    Unchanged,
)
from common.transfer_watchdog import ends_on_stop

__all__ = ["MAX_FAILURES_IN_A_ROW", "TEMPLATE_KEYS", "Entry", "FailureStreak", "FileSource", "FileVanished",
           "NotModified"]

log = structlog.get_logger(__name__)

#: Files failing one after another (after their own retries) that make the source "down".
MAX_FAILURES_IN_A_ROW = 5

#: Source keys every file source gets from the template (added to its ``source_schema``).
_AGE = {"type": "string", "pattern": r"^([0-9]+(\.[0-9]+)?(s|m|h|d|w)|[0-9]{4}-[0-9]{2}-[0-9]{2}([T ].+)?)$"}
TEMPLATE_KEYS: Mapping[str, Mapping[str, Any]] = {
    "include": {"type": "array", "items": {"type": "string", "minLength": 1}, "default": ["*"],
                "description": "Glob patterns (fnmatch, case-sensitive): one without `/` matches a file's base name, "
                               "one with `/` its path relative to the source (`sub/*.csv`, `**` too); a file "
                               "matching any is read."},
    "exclude": {"type": "array", "items": {"type": "string", "minLength": 1}, "default": [],
                "description": "Glob patterns, as `include`; a file matching any is left out, even if `include` "
                               "matches it."},
    "min_size": {"type": "integer", "minimum": 0,
                 "description": "Leave out files the listing says are smaller (bytes)."},
    "max_size": {"type": "integer", "minimum": 0,
                 "description": "Leave out files the listing says are larger (bytes); unlike max_file_bytes, "
                                "they are not recorded as rejected."},
    "newer_than": {**_AGE, "description": "Only files modified less than this long ago (`36h`, `7d`, `2w`) or after "
                                          "this date (`2026-11-01`, ISO; UTC unless it says otherwise). Files whose "
                                          "listing has no time pass."},
    "older_than": {**_AGE, "description": "Only files modified more than this long ago, or before this date."},
}


def glob_matches(name: str, pattern: str) -> bool:
    """rclone's and gitignore's rule: a pattern without ``/`` matches the base name, at any depth;
    one with ``/`` matches the whole source-relative path (a leading ``/`` anchors nothing more;
    ``*`` and ``**`` both cross folders, as fnmatch's ``*`` does). Case-sensitive."""
    if "/" not in pattern:
        return fnmatch.fnmatchcase(PurePosixPath(name).name, pattern)
    return fnmatch.fnmatchcase(name, pattern.lstrip("/").replace("**", "*"))


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _moment(value: str) -> dt.datetime:
    """``7d`` (ago, from now) or an ISO date/time (UTC unless it carries an offset), aware."""
    if value[-1] in _UNITS and value[0].isdigit() and "-" not in value:
        return dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=float(value[:-1]) * _UNITS[value[-1]])
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


class FileVanished(SourceError):
    """The entry was deleted between the listing and its download: skipped, not an error."""


class NotModified(SourceError):
    """Raised by :meth:`FileSource.download` when the source answers that the file is the version
    the last run recorded (an HTTP ``304`` to a conditional request built from
    ``ctx.previous``): the entry is recorded as unchanged, nothing is landed again. Field
    ``identity``: the marks the answer confirmed (they are merged over the recorded ones)."""


@dataclass(frozen=True)
class Entry:
    """One file of a listing."""

    name: str
    """Source-relative name with ``/`` separators (the key suffix derives from it)."""
    source_uri: str
    """Where it is, without credentials; one entry per URI."""
    size: int | None = None
    """Bytes, when the listing says; None: unknown until downloaded."""
    identity: Mapping[str, str] = field(default_factory=dict)
    """The version marks (``etag`` and ``size``; ``size`` and ``modify``): with ``incremental``
    an entry whose marks all equal the last run's is not downloaded."""
    handle: Any = None
    """The module's own reference for :meth:`FileSource.download` (a raw key, a path)."""
    modified: dt.datetime | None = None
    """When the file was last modified (aware, UTC), when the listing says: ``newer_than`` and
    ``older_than`` filter on it."""


class FileSource(BaseModule):
    """Base class of file sources (see the module docstring)."""

    resumable: ClassVar[bool] = False
    """True when :meth:`download` continues from ``sink.size`` on a retry (FTP ``REST``);
    otherwise the framework resets the sink before each try."""
    supports: ClassVar[frozenset[str]] = frozenset({"incremental", "rate_limit", "transfers", "delay"})
    fatal_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """Errors of :meth:`download` that fail the whole source at once instead of one file
    (credentials refused: every other file would fail the same way)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        schema = getattr(cls, "source_schema", None)
        if isinstance(schema, Mapping):
            properties = dict(schema.get("properties", {}))
            for key, spec in TEMPLATE_KEYS.items():
                properties.setdefault(key, dict(spec))
            cls.source_schema = {**schema, "properties": properties}

    @abc.abstractmethod
    def list_entries(self) -> Iterator[Entry]:
        """Every file of the source, in a stable order. Raise a ``SourceError`` (``Transient``
        when a retry may help; ``ListingIncomplete`` when the listing cannot be completed) if
        the source cannot be listed: that fails the job's source. Remote calls inside
        ``self.ctx.retry.call`` and ``self.ctx.slot(host)``."""

    @abc.abstractmethod
    def download(self, entry: Entry, sink: FileSink) -> Mapping[str, str] | None:
        """Stream ``entry`` into ``sink`` (``sink.write``) under the transfer watchdog.

        Runs inside a connection slot of :meth:`host_for` and inside the framework's retry:
        raise a ``SourceError`` (``Transient`` to be retried), :class:`FileVanished` when the
        file is gone. Returns the version marks of what was actually read (they may differ
        from the listing's), or None to keep ``entry.identity``. May run in several threads
        at once (one entry each): keep per-download state local or in pooled connections.
        """

    def host_for(self, entry: Entry) -> str:
        """The host whose connection slot a download of ``entry`` holds; default: the first of
        :meth:`hosts`, or the module type when it declares none."""
        hosts = type(self).hosts(self.source)
        return hosts[0] if hosts else f"{self.ctx.module}://"

    # ------------------------------------------------------------------ the template's steps

    def wanted(self, entry: Entry) -> bool:
        """Whether the filters let the entry in: ``include``/``exclude`` (:func:`glob_matches`),
        ``min_size``/``max_size`` on the listed size, ``newer_than``/``older_than`` on the listed
        time (an entry without a size or a time passes those)."""
        include = self.source.get("include") or ("*",)
        exclude = self.source.get("exclude") or ()
        if not any(glob_matches(entry.name, p) for p in include) or any(glob_matches(entry.name, p) for p in exclude):
            return False
        if entry.size is not None:
            if entry.size < self.source.get("min_size", 0):
                return False
            if "max_size" in self.source and entry.size > self.source["max_size"]:
                return False
        if entry.modified is not None:
            after, before = self._window()
            if (after is not None and entry.modified < after) or (before is not None and entry.modified > before):
                return False
        return True

    def _window(self) -> tuple[dt.datetime | None, dt.datetime | None]:
        """``newer_than`` and ``older_than`` as moments, taken once per module (durations count
        back from the job's first look at them)."""
        window = self.__dict__.get("_time_window")
        if window is None:
            try:
                window = tuple(_moment(self.source[k]) if self.source.get(k) else None
                               for k in ("newer_than", "older_than"))
            except ValueError as exc:
                raise ConfigError(f"source.newer_than/older_than: not a duration or date: {exc}") from None
            self.__dict__["_time_window"] = window
        return window  # type: ignore[return-value]

    def settle(self, entry: Entry) -> Unchanged | FetchFailed | None:
        """What becomes of ``entry`` without downloading it: Unchanged (incremental), rejected
        (over ``max_file_bytes`` by its listed size), or None: download it."""
        if entry.identity and self.ctx.unchanged(entry.source_uri, entry.identity):
            return Unchanged(entry.name, entry.source_uri, entry.identity)
        if entry.size is not None and entry.size > self.ctx.max_file_bytes:
            return FetchFailed(entry.name, entry.source_uri,
                               f"{entry.size} bytes, over max_file_bytes ({self.ctx.max_file_bytes})",
                               status="rejected")
        return None

    def fetch_entry(self, entry: Entry, workdir: Path) -> FetchedFile | FetchFailed | Unchanged | None:
        """Download one entry with the framework's retries, in a slot of its host: the file,
        a FetchFailed (``rejected`` when too large), Unchanged when the source said it was not
        modified (:class:`NotModified`), or None when it vanished.

        Raises TransferStopped when the run stops, and errors that are not ``ModuleSystemError``
        (bugs) as they are."""
        sink = self.ctx.new_file(workdir, entry.name, entry.source_uri, entry.identity)
        try:
            marks = self.ctx.retry.call(self._download_once, entry, sink, what=f"get {entry.source_uri}")
            if marks is not None:
                sink.identity = dict(marks)
            return sink.finish()
        except FileVanished:
            sink.abort()
            log.warning("file_vanished", uri=entry.source_uri)
            return None
        except NotModified as exc:
            sink.abort()
            before = self.ctx.previous.get(entry.source_uri, {})
            return Unchanged(entry.name, entry.source_uri, {**before, **(exc.fields.get("identity") or {})})
        except FileTooLarge as exc:
            sink.abort()
            return FetchFailed(entry.name, entry.source_uri, str(exc), status="rejected")
        except ModuleSystemError as exc:  # SourceError, DiskFullError, TransferStopped
            sink.abort()
            if isinstance(exc, TransferStopped) or self.ctx.stop.is_set():
                raise TransferStopped(str(exc)) from exc
            if isinstance(exc, self.fatal_errors):
                raise
            if isinstance(exc, DiskFullError):  # local, not the source's fault
                return _LocalFailure(entry.name, entry.source_uri, str(exc))
            return FetchFailed(entry.name, entry.source_uri, str(exc))
        except BaseException:
            sink.abort()
            raise

    def _download_once(self, entry: Entry, sink: FileSink) -> Mapping[str, str] | None:
        if not self.resumable and sink.size:
            sink.reset()
        with self.ctx.slot(self.host_for(entry)):
            return self.download(entry, sink)

    @ends_on_stop
    def fetch(self, workdir: Path) -> Iterator[FetchedFile | FetchFailed | Unchanged]:
        """The template one file at a time (the job runner runs it ``transfers`` wide instead).
        Ends quietly when the run stops, also when a listing call was cut."""
        streak = FailureStreak(self.ctx.module)
        for entry in self.list_entries():
            if self.ctx.stop.is_set():
                return
            if not self.wanted(entry):
                continue
            settled = self.settle(entry)
            if settled is not None:
                yield settled
                continue
            try:
                item = self.fetch_entry(entry, workdir)
            except TransferStopped:
                return
            if item is None:
                continue
            if not isinstance(item, Unchanged):
                streak.saw(item)
            yield item


@dataclass(frozen=True)
class _LocalFailure(FetchFailed):
    """A file that failed here (the temp disk is full), not at the source: not a sign the source is down."""


class FailureStreak:
    """Counts files failing one after another; past :data:`MAX_FAILURES_IN_A_ROW` the source is down."""

    def __init__(self, what: str, limit: int = MAX_FAILURES_IN_A_ROW) -> None:
        self.what = what
        self.limit = limit
        self.in_a_row = 0

    def saw(self, item: FetchedFile | FetchFailed) -> None:
        """Note one file's outcome; raises TransientSourceError on the limit-th failure in a row."""
        if isinstance(item, _LocalFailure):
            return
        if isinstance(item, FetchFailed) and item.status == "failed":
            self.in_a_row += 1
            if self.in_a_row >= self.limit:
                raise TransientSourceError(f"{self.in_a_row} files failed in a row; the {self.what} source "
                                           f"looks down (last: {item.source_uri}: {item.error})")
        else:
            self.in_a_row = 0
