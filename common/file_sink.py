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
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from common.disk_full import disk_full_error, is_disk_full
from common.exceptions import SourceError

if TYPE_CHECKING:
    from common.interfaces.base_module import FetchedFile


class FileTooLarge(SourceError):
    """A file grew past the service's ``max_file_bytes``; the module yields it as rejected."""


#: Files up to this size also get their MD5 while streamed: the ETag of a single-part upload,
#: which the uploader compares instead of asking the store with a HEAD. Past it the MD5 is
#: dropped (at most this much hashed in vain for a large file, which goes in parts anyway);
#: the uploader reads a larger single-part file once more for it.
MD5_MAX_BYTES = 8 * 1024 * 1024

#: A source name's extension kept on the local file (for tools that look at it): short and plain.
_PLAIN_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}$")


@dataclass(frozen=True)
class PartHashing:
    """Per-part SHA-256s the sink streams for the uploader's multipart upload.

    ``part_size`` is the destination's part size; hashing starts once the file reaches
    ``from_bytes`` (the multipart threshold), after a catch-up read of what is on disk by
    then, so a small file costs nothing and a large one is never read again to be hashed.
    """

    part_size: int
    from_bytes: int


class FileSink:
    """Context manager; removes the partial file if the block raises.

    A full filesystem (ENOSPC, EDQUOT) while the file is created, written or closed raises
    :class:`~common.exceptions.DiskFullError` naming the directory, for every module alike:
    the module records this file as failed and goes on with the next.
    """

    def __init__(self, workdir: Path, name: str, source_uri: str, identity: Mapping[str, str],
                 max_bytes: int | None = None, parts: PartHashing | None = None) -> None:
        self.name = name
        suffix = _PLAIN_SUFFIX.search(name.rpartition("/")[2])
        try:
            workdir.mkdir(parents=True, exist_ok=True)
            fd, path = tempfile.mkstemp(suffix=suffix.group(0) if suffix else "", prefix="f", dir=workdir)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(exc, name, workdir, 0) from exc
            raise
        self.path = Path(path)
        self.source_uri = source_uri
        self.identity = dict(identity)
        self._hash = hashlib.sha256()
        self._md5: hashlib._Hash | None = hashlib.md5(usedforsecurity=False)
        self._size = 0
        self.max_bytes = max_bytes
        self._parts_of = parts
        self._start_parts()
        self._fh = os.fdopen(fd, "wb")  # noqa: SIM115 - closed in finish()/abort()
        self._workdir = workdir

    def write(self, chunk: bytes) -> int:
        if self.max_bytes is not None and self._size + len(chunk) > self.max_bytes:
            raise FileTooLarge(f"{self.source_uri}: larger than max_file_bytes ({self.max_bytes})",
                               uri=self.source_uri, max_bytes=self.max_bytes)
        try:
            self._fh.write(chunk)
            self._hash.update(chunk)
            if self._parts_of is not None:
                if self._parts is None and self._size + len(chunk) >= self._parts_of.from_bytes:
                    self._catch_up()  # flushes: may find the disk full too
                if self._parts is not None:
                    self._hash_parts(chunk)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(exc, self.name, self._workdir, self._size) from exc
            raise
        self._size += len(chunk)
        if self._md5 is not None:
            if self._size <= MD5_MAX_BYTES:
                self._md5.update(chunk)
            else:
                self._md5 = None
        return len(chunk)

    def reset(self) -> None:
        """Start the file over (a download restarted from byte 0)."""
        self._fh.seek(0)
        self._fh.truncate()
        self._hash = hashlib.sha256()
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._size = 0
        self._start_parts()

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
        part_sha256 = None
        if self._parts is not None and self._parts_of is not None:
            if self._part_left < self._parts_of.part_size:  # the last, shorter part
                self._parts.append(self._part.hexdigest())
            part_sha256 = tuple(self._parts)
        return FetchedFile(
            path=self.path, name=self.name, source_uri=self.source_uri,
            size=self._size, sha256=self._hash.hexdigest(), identity=self.identity,
            md5=self._md5.hexdigest() if self._md5 is not None else None,
            part_size=self._parts_of.part_size if part_sha256 is not None and self._parts_of else None,
            part_sha256=part_sha256,
        )

    # -- part digests ------------------------------------------------------------

    def _start_parts(self) -> None:
        self._parts: list[str] | None = None  # None: not hashing parts (yet)
        self._part = hashlib.sha256()
        self._part_left = self._parts_of.part_size if self._parts_of else 0

    def _catch_up(self) -> None:
        """Start part hashing: hash the ``self._size`` bytes already on disk, part by part."""
        self._parts = []
        self._fh.flush()
        with open(self.path, "rb") as fh:
            remaining = self._size
            while remaining:
                block = fh.read(min(1 << 20, remaining))
                if not block:  # cannot happen: the bytes were just written and flushed
                    raise OSError(f"{self.path} is shorter than the {self._size} bytes written")
                self._hash_parts(block)
                remaining -= len(block)

    def _hash_parts(self, data: bytes) -> None:
        assert self._parts is not None and self._parts_of is not None
        view = memoryview(data)
        while view:
            take = min(len(view), self._part_left)
            self._part.update(view[:take])
            self._part_left -= take
            view = view[take:]
            if self._part_left == 0:
                self._parts.append(self._part.hexdigest())
                self._part = hashlib.sha256()
                self._part_left = self._parts_of.part_size

    def abort(self) -> None:
        try:
            self._fh.close()
        except OSError:  # the buffered tail could not be written (disk full): the file goes anyway
            pass
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FileSink:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._fh.closed:
            self._fh.close()
