"""A write-only local file that hashes and counts while it is written.

Modules stream source bytes into a :class:`FileSink` (``ftplib.retrbinary(cmd,
sink.write)``, ``for chunk in body.iter_chunks(): sink.write(chunk)``) and get a
:class:`FetchedFile` from :meth:`FileSink.finish`, so content is read once.

The local file's name is the sink's own (a unique name under the workdir, keeping only a
short plain extension of the source name), never the source name: a name too long for
the file system, one that is a folder of another (``m`` and ``m/x.txt``), or names that
differ only in what the file system folds together cannot break or mix local files.
``name`` stays the logical, source-relative name (the runner derives the key from it).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from common.disk_full import disk_full_error, is_disk_full
from common.exceptions import SourceError

if TYPE_CHECKING:
    from common.interfaces.base_module import FetchedFile, StoredAt
    from common.stream_hooks import StreamHook


class FileTooLarge(SourceError):
    """A file grew past the service's ``max_file_bytes``; the module yields it as rejected."""


#: A source name's extension kept on the local file (for tools that look at it): short and plain.
_PLAIN_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}$")


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_numbers = itertools.count()


def _create(workdir: Path, suffix: str) -> tuple[int, Path]:
    """A new, empty, private (0600) file under ``workdir`` (made if missing), open for writing.

    Named ``f<n><suffix>`` by a process-wide counter: the workdir is the job's own temp folder,
    so ``O_EXCL`` (the next number on a clash) is all ``tempfile.mkstemp``'s random names would
    add, at a fraction of its cost per file."""
    made = False
    while True:
        path = workdir / f"f{next(_numbers)}{suffix}"
        try:
            return os.open(path, _CREATE_FLAGS, 0o600), path
        except FileExistsError:
            continue
        except FileNotFoundError:
            if made:
                raise
            workdir.mkdir(parents=True, exist_ok=True)
            made = True


class FileSink:
    """Context manager; removes the partial file if the block raises.

    A full filesystem (ENOSPC, EDQUOT) while the file is created, written or closed raises
    :class:`~common.exceptions.DiskFullError` naming the directory, for every module alike:
    the module records this file as failed and goes on with the next.
    """

    def __init__(self, workdir: Path, name: str, source_uri: str, identity: Mapping[str, str],
                 max_bytes: int | None = None, hooks: Mapping[str, StreamHook] | None = None,
                 on_finish: Callable[[Path, dict[str, Any]], None] | None = None) -> None:
        self.name = name
        suffix = _PLAIN_SUFFIX.search(name.rpartition("/")[2])
        try:
            fd, path = _create(workdir, suffix.group(0) if suffix else "")
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(exc, name, workdir, 0) from exc
            raise
        self.path = path
        self.source_uri = source_uri
        self.identity = dict(identity)
        self._hash = hashlib.sha256()
        self._size = 0
        self.max_bytes = max_bytes
        self._hooks = dict(hooks or {})
        """The destination's digests, streamed with the content (:mod:`common.stream_hooks`)."""
        self._on_finish = on_finish
        self.stored_at: StoredAt | None = None
        """Set by a module whose source is an object store (:class:`~common.interfaces.base_module.StoredAt`)."""
        self._fh = os.fdopen(fd, "wb")
        self._workdir = workdir

    def write(self, chunk: bytes) -> int:
        if self.max_bytes is not None and self._size + len(chunk) > self.max_bytes:
            raise FileTooLarge(f"{self.source_uri}: larger than max_file_bytes ({self.max_bytes})",
                               uri=self.source_uri, max_bytes=self.max_bytes)
        try:
            self._fh.write(chunk)
            self._hash.update(chunk)
            for hook in self._hooks.values():
                hook.update(chunk, self)  # may flush (a catch-up read): may find the disk full too
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(exc, self.name, self._workdir, self._size) from exc
            raise
        self._size += len(chunk)
        return len(chunk)

    def flush(self) -> None:
        """Put what was written so far on disk (for a hook that reads the file back)."""
        self._fh.flush()

    def reset(self) -> None:
        """Start the file over (a download restarted from byte 0).

        An empty file is not truncated: on ext4 a file truncated to 0 is flushed to disk when it is
        closed (``auto_da_alloc``), which made every api page's ``close`` cost a writeback."""
        if self._size:
            self._fh.seek(0)
            self._fh.truncate()
        self._hash = hashlib.sha256()
        self._size = 0
        for hook in self._hooks.values():
            hook.reset()

    @property
    def size(self) -> int:
        return self._size

    def finish(self) -> FetchedFile:
        from common.interfaces.base_module import FetchedFile

        try:
            self._fh.close()  # flushes the last buffered bytes: may find the disk full too
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(exc, self.name, self._workdir, self._size) from exc
            raise
        if self._on_finish is not None:
            self._on_finish(self.path, {name: hook.result() for name, hook in self._hooks.items()})
        return FetchedFile(
            path=self.path, name=self.name, source_uri=self.source_uri,
            size=self._size, sha256=self._hash.hexdigest(), identity=self.identity, stored_at=self.stored_at,
        )

    def abort(self) -> None:
        try:
            self._fh.close()
        except OSError:  # the buffered tail could not be written (disk full): the file goes anyway
            pass
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._fh.closed:
            self._fh.close()
