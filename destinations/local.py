"""The ``local`` destination: files in a folder, in the same layout as in S3.

Prefixes become folders under ``path`` (``landing/data/ftp/sales/validated/a.csv``), manifests
go under ``_manifests/``. The guarantees of the ``s3`` destination, on a filesystem:

* **Atomic.** A file is hard-linked (``link: true``, the default, when the state dir and
  ``path`` share a filesystem: no copy) or copied into a temp file beside its target
  (``.<name>.<random>.part``), then renamed onto it (``os.replace``): a reader sees the old
  file or the new one, never half of one. With ``fsync: true`` the file and its folder are flushed to disk before and after
  the rename (safe against a power cut, and slower: one flush per file).
* **Verified.** A copy is hashed as it is written; a SHA-256 other than the one the file
  had when it was fetched fails the file (transient: the next try copies again), and the
  target is left as it was. A hard link is the very inode whose bytes were hashed as they
  were fetched (its size is checked; ``link: false`` copies and hashes every file).
* **Skip-same without re-reading the tree.** What this destination wrote is recorded in an
  index beside the files (``_module_system/index.sqlite3``: key, size, mtime, sha256). A
  target whose size and mtime still match its row holds that sha256: the same content is
  ``skipped_same`` without a read. A target the index cannot vouch for (written by someone
  else, touched since, or the index was deleted) is hashed once, and recorded. Losing the
  index costs one read of each file met again, never a copy. The index is read into memory
  once per run and written in batches of 512 rows (and at the end of the run): a kill loses
  at most the last batch, which again costs reads, never copies. For the same reason an index
  that cannot be written (a full disk, another run holding it longer than ``timeout_s``) never
  fails a file: one ``local_index_not_saved`` warning, the rows are kept and written with the
  next batch. An index that cannot be opened (e.g. not a database) is reported with its path.
* **Ours only.** A stale copy is deleted only when the index says this destination wrote it
  and it has not changed since (as ``s3`` deletes only objects with its ``sha256`` metadata).
* **Confined.** A key that is absolute, holds a ``..`` segment, points into
  ``_module_system/`` or resolves outside ``path`` through a symlinked folder is refused
  (the file fails; nothing is written). Each folder is resolved once per run. The framework's keys never do; prefixes with ``..``
  are a registry error.

A full disk fails the file in hand (not retried), as in the temp dir. A kill during a copy
leaves a ``.part`` file beside the target; the target itself is intact. Orphaned ``.part``
files are removed by the next :meth:`LocalDestination.check` (the run's pre-flight) when older
than a day.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import structlog

from common.exceptions import TransientUploadError, UploadError
from common.interfaces.destination import (
    DestinationSetup,
    DestinationUnusable,
    FileDestination,
    LandingFile,
    PutStatus,
)
from common.retry import RetryPolicy

__all__ = ["INDEX_DIR", "LocalDestination"]

log = structlog.get_logger(__name__)

T = TypeVar("T")

#: The folder under ``path`` that holds the destination's own index: never a key.
INDEX_DIR = "_module_system"
CHUNK = 1 << 20
#: Orphaned ``.part`` files older than this are removed by the pre-flight check.
STALE_PART_S = 24 * 3600


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Permissions of landed files: 0o666 less the process's umask (read once, at import).
_FILE_MODE = 0o666 & ~_umask()

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["path"],
    "properties": {
        "path": {"type": "string", "minLength": 1,
                 "description": "The folder files land in (created if missing); relative to the registry file's "
                                "folder; `~` is expanded."},
        "link": {"type": "boolean", "default": True,
                 "description": "Hard-link the fetched file into place when the state dir and path share a "
                                "filesystem (no copy; its sha256 was computed as it was written); false always copies "
                                "and hashes the copy."},
        "fsync": {"type": "boolean", "default": False,
                  "description": "Flush each file and its folder to disk around the rename: survives a power cut, "
                                 "costs one flush per file."},
    },
}


class LocalDestination(FileDestination):
    config_schema = _SCHEMA
    default_name = "local"
    lands_locally = True

    def __init__(self, config: Mapping[str, Any], setup: DestinationSetup) -> None:
        super().__init__(config, setup)
        root = Path(os.path.expanduser(str(config["path"])))
        self.root = root if root.is_absolute() else setup.base_dir / root
        self.fsync = bool(config.get("fsync", False))
        self.link = bool(config.get("link", True))
        self._index: _Index | None = None
        self._index_lock = threading.Lock()
        self._real_root: Path | None = None
        self._inside: set[Path] = set()
        """Folders under the root already seen to resolve inside it (checked once per folder per run)."""

    def describe(self) -> str:
        return str(self.root)

    # ------------------------------------------------------------------ the interface

    def check(self, retry: RetryPolicy) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise DestinationUnusable(_os_reason(exc)) from None
        try:
            self.index()
        except UploadError as exc:
            raise DestinationUnusable(exc.message) from None
        self._remove_stale_parts()

    def put_file(self, key: str, file: LandingFile, retry: RetryPolicy, *, skip_same: bool = True) -> PutStatus:
        target = self._target(key)
        if skip_same and self._holds(key, target, file.size, file.sha256):
            return "skipped_same"
        if self.link and self._linked(key, target, file):
            return "uploaded"
        with _reading(file.path, key) as chunks:
            self._write(key, target, chunks, file.sha256)
        return "uploaded"

    def put_json(self, key: str, document: Any, retry: RetryPolicy) -> PutStatus:
        body = json.dumps(document, separators=(",", ":"), default=str).encode()
        digest = hashlib.sha256(body).hexdigest()
        target = self._target(key)
        if self._holds(key, target, len(body), digest):
            return "skipped_same"
        self._write(key, target, iter((body,)), digest)
        return "uploaded"

    def delete_owned(self, key: str, retry: RetryPolicy) -> bool:
        row = self.index().get(key)
        if row is None:
            return False
        target = self._target(key)
        try:
            st = os.stat(target)
        except FileNotFoundError:
            self.index().forget(key)
            return False
        except OSError as exc:
            raise UploadError(f"cannot check {key}: {_os_reason(exc)}", key=key) from None
        if (st.st_size, st.st_mtime_ns) != row[:2]:
            log.warning("stale_copy_not_ours", key=key, reason="changed since this destination wrote it")
            return False
        try:
            os.unlink(target)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise UploadError(f"delete of {key} failed: {_os_reason(exc)}", key=key) from None
        self.index().forget(key)
        return True

    def read_json(self, key: str, retry: RetryPolicy) -> Any | None:
        try:
            return json.loads(self._target(key).read_bytes())
        except (OSError, ValueError, UploadError):
            return None

    def close(self) -> None:
        with self._index_lock:
            if self._index is not None:
                self._index.close()
                self._index = None

    # ------------------------------------------------------------------ internals

    def index(self) -> _Index:
        """The index, opened on first use; UploadError (naming it) when it cannot be."""
        with self._index_lock:
            if self._index is None:
                path = self.root / INDEX_DIR / "index.sqlite3"
                try:
                    self._index = _Index(path, self.setup.timeout_s)
                except (OSError, sqlite3.Error) as exc:
                    hint = ""
                    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
                        hint = " (delete it to rebuild it: each file is then hashed once, none copied again)"
                    raise UploadError(f"cannot open the index {path}: {_os_reason(exc)}{hint}") from None
            return self._index

    def _target(self, key: str) -> Path:
        """The path of ``key`` under the root; UploadError for a key that would leave it."""
        parts = key.split("/")
        if (not key or key.startswith("/") or "\\" in key or "\0" in key or ".." in parts or "" in parts[:-1]
                or parts[0] == INDEX_DIR or not parts[-1]):
            raise UploadError(f"key {key!r} is not a path under {self.root}", key=key)
        target = self.root.joinpath(*parts)
        folder = target.parent
        if folder in self._inside:
            return target
        if self._real_root is None:
            self._real_root = self.root.resolve()
        ancestor = folder
        while not ancestor.exists() and ancestor != self.root:  # the deepest folder that exists
            ancestor = ancestor.parent
        if not ancestor.resolve().is_relative_to(self._real_root):
            raise UploadError(f"key {key!r} leads outside {self.root} (a symlinked folder)", key=key)
        if ancestor == folder:
            self._inside.add(folder)
        return target

    def _holds(self, key: str, target: Path, size: int, sha256: str) -> bool:
        """Does ``target`` hold this content? From the index when it vouches for the file as it is
        now, else by hashing it (once: the answer is recorded)."""
        try:
            st = os.stat(target)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise UploadError(f"cannot check {key}: {_os_reason(exc)}", key=key) from None
        if st.st_size != size:
            return False
        row = self.index().get(key)
        if row is not None and row[:2] == (st.st_size, st.st_mtime_ns):
            return row[2] == sha256
        try:
            digest = _file_sha256(target)
        except OSError as exc:
            raise UploadError(f"cannot read {key}: {_os_reason(exc)}", key=key) from None
        if digest == sha256:
            self.index().put(key, st.st_size, st.st_mtime_ns, digest)
        return digest == sha256

    def _write(self, key: str, target: Path, chunks: Iterator[bytes], sha256: str) -> None:
        """Copy ``chunks`` into a temp file beside ``target``, hashing what is written; rename it
        onto ``target`` when the digest is ``sha256``; record it in the index."""
        temp: str | None = None
        try:
            fd, temp = self._in_folder(key, target, lambda: tempfile.mkstemp(
                prefix=f".{target.name[:80]}.", suffix=".part", dir=target.parent))
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                if self.fsync:
                    out.flush()
                    os.fsync(out.fileno())
            if digest.hexdigest() != sha256:
                raise TransientUploadError(f"verification of {key} failed: the copy's sha256 differs", key=key)
            os.chmod(temp, _FILE_MODE)
            os.replace(temp, target)
            temp = None
            if self.fsync:
                _fsync(target.parent)
            st = os.stat(target)
        except OSError as exc:
            raise UploadError(f"write of {key} failed: {_os_reason(exc)}", key=key) from None
        finally:
            if temp is not None:
                _unlink(temp)
        self.index().put(key, st.st_size, st.st_mtime_ns, sha256)

    def _linked(self, key: str, target: Path, file: LandingFile) -> bool:
        """Hard-link the fetched file into place. False when the two are on different filesystems
        (or links are refused): then it is copied.

        The fetched file is complete and private (the job's temp folder): it gets the landed
        file's mode, then a link at ``target`` itself when nothing is there (one step: the name
        appears with the whole content), else a link at a temp name beside it renamed onto it."""
        try:
            st = os.stat(file.path)
            if st.st_size != file.size:  # the fetched file is not what was streamed: copy (and hash) instead
                return False
            if stat.S_IMODE(st.st_mode) != _FILE_MODE:
                os.chmod(file.path, _FILE_MODE)
            if self.fsync:
                _fsync(file.path)
            self._in_folder(key, target, lambda: os.link(file.path, target))
        except FileExistsError:
            if not self._linked_over(key, target, file):
                return False
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                return False
            raise UploadError(f"write of {key} failed: {_os_reason(exc)}", key=key) from None
        if self.fsync:
            self._fsync_folder(key, target)
        self.index().put(key, st.st_size, st.st_mtime_ns, file.sha256)
        return True

    def _linked_over(self, key: str, target: Path, file: LandingFile) -> bool:
        """Replace what is at ``target`` by a link to the fetched file (through a temp name)."""
        part = target.parent / f".{target.name[:80]}.{os.getpid()}-{threading.get_ident()}.part"
        try:
            try:
                os.link(file.path, part)
            except FileExistsError:
                os.unlink(part)
                os.link(file.path, part)
        except OSError as exc:
            if exc.errno in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                return False
            raise UploadError(f"write of {key} failed: {_os_reason(exc)}", key=key) from None
        try:
            os.replace(part, target)
        except OSError as exc:
            _unlink(str(part))
            raise UploadError(f"write of {key} failed: {_os_reason(exc)}", key=key) from None
        return True

    def _in_folder(self, key: str, target: Path, step: Callable[[], T]) -> T:
        """Run ``step`` (which creates a file in ``target``'s folder), making the folder first when
        it is not known to exist; checked again once made (a folder made meanwhile must not lead
        outside the root either)."""
        folder = target.parent
        if folder in self._inside:
            try:
                return step()
            except FileNotFoundError:  # removed since: make it again
                self._inside.discard(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._target(key)
        return step()

    def _fsync_folder(self, key: str, target: Path) -> None:
        try:
            _fsync(target.parent)
        except OSError as exc:
            raise UploadError(f"write of {key} failed: {_os_reason(exc)}", key=key) from None

    def _remove_stale_parts(self) -> None:
        """Remove ``.part`` files a killed run left, once they are a day old.

        The walk reads every folder under the root, so it runs at most once a day (the time of
        the last one is ``_module_system/parts-swept``'s mtime): a part is removed only when a day
        old anyway, and a folder of millions of files is not walked before every run."""
        now = time.time()
        marker = self.root / INDEX_DIR / "parts-swept"
        try:
            if now - marker.stat().st_mtime < STALE_PART_S:
                return
        except OSError:  # never swept
            pass
        cutoff = now - STALE_PART_S
        for part in self.root.rglob(".*.part"):
            try:
                if part.is_file() and part.stat().st_mtime < cutoff:
                    part.unlink()
                    log.info("stale_part_removed", path=str(part))
            except OSError:
                continue
        try:
            marker.touch()
        except OSError as exc:  # a sweep not recorded is only done again next run
            log.debug("parts_sweep_not_recorded", path=str(marker), reason=_os_reason(exc))


class _Index:
    """key -> (size, mtime_ns, sha256) of what the destination wrote: held in memory (read once),
    written to SQLite in batches. A lost batch (a kill) costs a re-hash of those files later,
    never a copy. One connection, under a lock, for every thread.

    The index is a cache: a write that fails (a full disk, a lock held by another run for longer
    than ``timeout_s``) is logged once (``local_index_not_saved``) and never raised; the rows stay
    in memory, serve this run, and are written with the next batch or at :meth:`close`."""

    BATCH = 512

    def __init__(self, path: Path, timeout_s: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=timeout_s)
        self._lock = threading.Lock()
        self._pending: list[tuple[str, int, int, str]] = []
        self._flush_at = self.BATCH
        """Pending rows that trigger a write (grows by a batch after a failed one)."""
        self._warned = False
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS files (key TEXT PRIMARY KEY, size INTEGER NOT NULL, "
                             "mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL)")
            self._rows: dict[str, tuple[int, int, str]] = {
                str(k): (int(size), int(mtime), str(sha))
                for k, size, mtime, sha in self._db.execute("SELECT key, size, mtime_ns, sha256 FROM files")}
        except BaseException:
            self._db.close()
            raise

    def get(self, key: str) -> tuple[int, int, str] | None:
        with self._lock:
            return self._rows.get(key)

    def put(self, key: str, size: int, mtime_ns: int, sha256: str) -> None:
        with self._lock:
            self._rows[key] = (size, mtime_ns, sha256)
            self._pending.append((key, size, mtime_ns, sha256))
            if len(self._pending) >= self._flush_at:
                self._flush()

    def forget(self, key: str) -> None:
        """Drop ``key`` (its file is gone). A row the database keeps anyway is harmless: a missing
        target is written again and its row replaced."""
        with self._lock:
            self._rows.pop(key, None)
            self._pending = [row for row in self._pending if row[0] != key]
            try:
                self._db.execute("DELETE FROM files WHERE key = ?", (key,))
            except sqlite3.Error as exc:
                self._not_saved(exc)

    def _flush(self) -> None:
        if not self._pending:
            return
        try:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO files (key, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
                                 self._pending)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
            self._flush_at = len(self._pending) + self.BATCH
            self._not_saved(exc)
            return
        self._pending = []
        self._flush_at = self.BATCH

    def _not_saved(self, exc: sqlite3.Error) -> None:
        if not self._warned:
            self._warned = True
            log.warning("local_index_not_saved", index=str(self.path), error=_os_reason(exc),
                        hint="files still land; rows not saved cost one hash of their file next run, not a copy")
        else:
            log.debug("local_index_not_saved", index=str(self.path), error=_os_reason(exc))

    def close(self) -> None:
        with self._lock:
            self._flush()
            if self._pending:
                log.warning("local_index_rows_lost", index=str(self.path), rows=len(self._pending),
                            hint="those files are hashed once when met again, not copied")
            try:
                self._db.close()
            except sqlite3.Error as exc:
                self._not_saved(exc)


@contextmanager
def _reading(path: Path, key: str) -> Iterator[Iterator[bytes]]:
    """The chunks of the fetched file at ``path`` (its loss is a failure of this key)."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise UploadError(f"cannot read the fetched file for {key}: {_os_reason(exc)}", key=key) from None
    with fh:
        yield iter(lambda: fh.read(CHUNK), b"")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _os_reason(exc: BaseException) -> str:
    """An OSError as a reason a user can act on (no traceback): 'no space left', 'not a directory: /x'..."""
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "disk full (" + ("quota exceeded" if exc.errno == errno.EDQUOT else "no space left") + ")"
        text = exc.strerror or type(exc).__name__
        return f"{text}: {exc.filename}" if exc.filename else text
    return f"{type(exc).__name__}: {exc}"
