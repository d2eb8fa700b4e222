"""The state of multipart uploads in progress: one small JSON file per upload.

Kept in ``<state-dir>/uploads/`` (``--state-dir``, default ``temp``) so that the next run
resumes what a crash, a kill or a stop cut off. A file is named after bucket + key +
sha256 + size + part size, holds the upload id, its creation time and, per finished
part, its ETag, size, our SHA-256 and the checksum sent, and is rewritten atomically
(temp file, rename; no fsync) after every part: a SIGKILL loses at most the parts in
flight. See :mod:`common.multipart_upload`, its only user.

Runs sharing one state directory may run at once: whoever uses the states of a key
(uploads, resumes, aborts them) first takes that key's lock, ``<hash>.lock`` beside the
states (:meth:`StateStore.key_lock`, a :class:`~common.file_lock.FileLock`), so no two
processes ever use one upload or its file at the same time.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from common.file_lock import FileLock

__all__ = ["MAX_PARTS", "STALE_AFTER_S", "PartRecord", "StateStore", "UploadState", "part_size_for"]

log = structlog.get_logger(__name__)
MiB = 1024 * 1024
MAX_PARTS = 10_000
#: Uploads (and their state) older than this are abandoned and aborted.
STALE_AFTER_S = 24 * 3600.0


@dataclass(frozen=True)
class PartRecord:
    etag: str
    size: int
    sha256: str
    """Our SHA-256 of the part's bytes (hex)."""
    checksum: str | None = None
    """The transport checksum sent with the part (base64), repeated in CompleteMultipartUpload."""


@dataclass
class UploadState:
    """One multipart upload in progress, as kept in its state file."""

    bucket: str
    key: str
    sha256: str
    size: int
    part_size: int
    upload_id: str
    created_at: float
    """Epoch seconds when the upload was created."""
    parts: dict[int, PartRecord] = field(default_factory=dict)

    @property
    def part_count(self) -> int:
        return -(-self.size // self.part_size)

    def part_length(self, number: int) -> int:
        return min(self.part_size, self.size - (number - 1) * self.part_size)

    def to_json(self) -> str:
        """Compact JSON (the C encoder): it is rewritten after every part of a large upload."""
        document = {"version": 1, "bucket": self.bucket, "key": self.key, "sha256": self.sha256, "size": self.size,
                    "part_size": self.part_size, "upload_id": self.upload_id, "created_at": self.created_at,
                    "parts": {str(n): {"etag": p.etag, "size": p.size, "sha256": p.sha256, "checksum": p.checksum}
                              for n, p in sorted(self.parts.items())}}
        return json.dumps(document, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> UploadState:
        document = json.loads(text)
        document.pop("version", None)
        parts = {int(n): PartRecord(**p) for n, p in document.pop("parts").items()}
        return cls(**document, parts=parts)


def part_size_for(size: int, chunksize: int) -> int:
    """``chunksize``, or more (whole MiB) when ``size`` would need more than 10,000 parts."""
    needed = -(-size // MAX_PARTS)
    return max(chunksize, -(-needed // MiB) * MiB)


def _alive(tmp: Path) -> bool:
    """Whether the process that named temp file ``.NAME.PID.THREAD.tmp`` may still write it."""
    if sys.platform == "win32":  # os.kill(pid, 0) would end the process there
        return time.time() - tmp.stat().st_mtime < STALE_AFTER_S
    try:
        os.kill(int(tmp.name.split(".")[-3]), 0)
    except (ValueError, IndexError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


class StateStore:
    """Upload states as JSON files in ``directory``; kept in memory only when it is None."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._memory: dict[str, str] = {}
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            for tmp in directory.glob(".*.tmp"):  # half-written by a process that was killed
                if not _alive(tmp):
                    tmp.unlink(missing_ok=True)
            for path in directory.glob("*.lock"):  # a killed process's: no one holds it, nothing to keep
                lock = FileLock(path)
                if lock.try_acquire():
                    lock.release(unlink=True)

    @staticmethod
    def name(bucket: str, key: str, sha256: str, size: int, part_size: int) -> str:
        identity = json.dumps([bucket, key, sha256, size, part_size])
        return hashlib.sha256(identity.encode()).hexdigest()[:40] + ".json"

    def key_lock(self, bucket: str, key: str) -> FileLock | None:
        """The lock (not yet taken) that guards every state of ``key`` against other processes;
        None when states are kept in memory (one process)."""
        if self.directory is None:
            return None
        name = hashlib.sha256(json.dumps([bucket, key]).encode()).hexdigest()[:40]
        return FileLock(self.directory / f"{name}.lock")

    def load(self, bucket: str, key: str, sha256: str, size: int, part_size: int) -> UploadState | None:
        return self._read(self.name(bucket, key, sha256, size, part_size))

    def save(self, state: UploadState) -> None:
        name, text = self.name_of(state), state.to_json()
        if self.directory is None:
            self._memory[name] = text
            return
        # Atomic, not durable: a reader sees the old file or the new one, never a torn one.
        # No fsync: a killed process loses nothing the OS holds, and after a power loss a
        # missing last part is only sent again (resuming checks every part with ListParts).
        # Syncing here held every part of an upload behind a disk flush (~10% of the CPU
        # and more of the wall time of a 1 GB file in 128 parts).
        tmp = self.directory / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.directory / name)

    def delete(self, state: UploadState) -> None:
        name = self.name_of(state)
        self._memory.pop(name, None)
        if self.directory is not None:
            (self.directory / name).unlink(missing_ok=True)

    def states(self) -> list[UploadState]:
        names = list(self._memory) if self.directory is None else [p.name for p in self.directory.glob("*.json")]
        return [s for s in map(self._read, names) if s is not None]

    def name_of(self, state: UploadState) -> str:
        """The file name of ``state``."""
        return self.name(state.bucket, state.key, state.sha256, state.size, state.part_size)

    def _read(self, name: str) -> UploadState | None:
        try:
            text = self._memory[name] if self.directory is None else (self.directory / name).read_text("utf-8")
            return UploadState.from_json(text)
        except (KeyError, FileNotFoundError):
            return None
        except (OSError, ValueError, TypeError) as exc:  # a damaged file: forget it, the upload starts over
            log.warning("multipart_state_unreadable", file=name, error=type(exc).__name__)
            if self.directory is not None:
                (self.directory / name).unlink(missing_ok=True)
            return None
