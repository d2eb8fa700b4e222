"""What a destination computes from a file's bytes while the sink writes them.

The framework installs these hooks on every sink it gives a module (``ctx.new_file``), so a
file is read once: the uploader gets the MD5 of a small file (the ETag it compares instead of
asking with a HEAD) and the SHA-256 of each part of a large one (the multipart upload's part
checksums) without reading the file again. Modules never see them: an uploader optimisation
adds a hook here, not a field to the plugin types.

A hook gets each chunk after it is on disk (``sink.size`` is then the byte count before the
chunk), starts over on ``sink.reset()``, and gives its result when the file is complete.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from common.file_sink import FileSink

__all__ = ["MD5_MAX_BYTES", "Md5Hook", "PartSha256Hook", "SinkHooks", "StreamHook"]

#: Files up to this size get their MD5 while streamed: the ETag of a single-part upload. Past it
#: the MD5 is dropped (at most this much hashed in vain for a large file, which goes in parts).
MD5_MAX_BYTES = 8 * 1024 * 1024


class StreamHook(Protocol):
    def update(self, chunk: bytes, sink: FileSink) -> None:
        """``chunk`` was written at offset ``sink.size``."""

    def reset(self) -> None:
        """The file starts over from byte 0."""

    def result(self) -> Any:
        """What was computed; None when nothing (e.g. the file was too large for it)."""


class Md5Hook:
    """Hex MD5 of files up to ``MD5_MAX_BYTES``; None for larger ones."""

    def __init__(self, max_bytes: int = MD5_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.reset()

    def reset(self) -> None:
        self._md5: Any = hashlib.md5(usedforsecurity=False)

    def update(self, chunk: bytes, sink: FileSink) -> None:
        if self._md5 is None:
            return
        if sink.size + len(chunk) <= self.max_bytes:
            self._md5.update(chunk)
        else:
            self._md5 = None

    def result(self) -> str | None:
        return self._md5.hexdigest() if self._md5 is not None else None


class PartSha256Hook:
    """SHA-256 of each ``part_size`` part, for files that reach ``from_bytes`` (the multipart
    threshold): ``(part_size, (hex, ...))``, or None for a smaller file.

    Hashing starts only once the file reaches ``from_bytes``, after a catch-up read of what is
    on disk by then, so a small file costs nothing and a large one is never read again.
    """

    def __init__(self, part_size: int, from_bytes: int) -> None:
        self.part_size = part_size
        self.from_bytes = from_bytes
        self.reset()

    def reset(self) -> None:
        self._parts: list[str] | None = None  # None: not hashing (yet)
        self._part = hashlib.sha256()
        self._left = self.part_size

    def update(self, chunk: bytes, sink: FileSink) -> None:
        if self._parts is None:
            if sink.size + len(chunk) < self.from_bytes:
                return
            self._catch_up(sink.path, sink.size, sink)
        self._hash(chunk)

    def result(self) -> tuple[int, tuple[str, ...]] | None:
        if self._parts is None:
            return None
        parts = list(self._parts)
        if self._left < self.part_size:  # the last, shorter part
            parts.append(self._part.hexdigest())
        return self.part_size, tuple(parts)

    def _catch_up(self, path: Path, size: int, sink: FileSink) -> None:
        self._parts = []
        sink.flush()
        with open(path, "rb") as fh:
            remaining = size
            while remaining:
                block = fh.read(min(1 << 20, remaining))
                if not block:  # cannot happen: the bytes were just written and flushed
                    raise OSError(f"{path} is shorter than the {size} bytes written")
                self._hash(block)
                remaining -= len(block)

    def _hash(self, data: bytes) -> None:
        assert self._parts is not None
        view = memoryview(data)
        while view:
            take = min(len(view), self._left)
            self._part.update(view[:take])
            self._left -= take
            view = view[take:]
            if self._left == 0:
                self._parts.append(self._part.hexdigest())
                self._part = hashlib.sha256()
                self._left = self.part_size


class SinkHooks:
    """The engine's side: makes a fresh set of hooks for each sink of a job, and keeps what
    they computed by local path until the file is landed (:meth:`take`)."""

    def __init__(self, factory: Callable[[], Mapping[str, StreamHook]]) -> None:
        self._factory = factory
        self._results: dict[Path, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def make(self) -> dict[str, StreamHook]:
        return dict(self._factory())

    def record(self, path: Path, results: dict[str, Any]) -> None:
        with self._lock:
            self._results[path] = results

    def take(self, path: Path) -> dict[str, Any]:
        """What the hooks computed for the file at ``path`` (empty if nothing), forgotten then."""
        with self._lock:
            return self._results.pop(path, {})
