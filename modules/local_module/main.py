"""The ``local`` source: the files of a folder on this machine (a local disk, an NFS or SMB mount).

Keys (``source`` of a ``type: local`` service):

``path``
    The folder (required); relative to the directory the run starts in; ``~`` expanded.
``recursive``
    Walk sub-folders (default true); names keep their sub-folders.
``follow_symlinks``
    Read files and folders that are symbolic links (default true), as long as what they point to
    is inside ``path``: a link that leads out of the folder is left out and logged
    (``local_link_outside``), so a link cannot pull ``/etc/passwd`` into a landing bucket.
``min_age_s``
    A file modified less than this many seconds ago is still being written: it is left for the
    next run and logged (``local_file_not_settled``; default 2). A file that changes while it is
    copied (size or modification time differ before and after) is retried, then fails.
Template keys
    ``include``/``exclude``, ``min_size``/``max_size``, ``newer_than``/``older_than``: the filters.

Identity: size and ``mtime_ns``, so ``incremental: true`` skips files that did not change.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import structlog

from module_system import (
    Entry,
    FileSink,
    FileSource,
    FileVanished,
    SourceError,
    Transient,
)

__all__ = ["LocalModule", "LocalSourceError"]

log = structlog.get_logger(__name__)
CHUNK_SIZE = 1024 * 1024


class LocalSourceError(SourceError):
    """The folder, or a file of it, cannot be read. Field: ``path``."""


class LocalFileChanging(LocalSourceError, Transient):
    """The file changed while it was copied: tried again."""


class LocalModule(FileSource):
    source_schema: ClassVar[Mapping[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {"type": "string", "minLength": 1,
                     "description": "The folder to read; relative to the run's working directory; ~ expanded."},
            "recursive": {"type": "boolean", "default": True, "description": "Walk sub-folders of path."},
            "follow_symlinks": {"type": "boolean", "default": True,
                                "description": "Read symbolic links whose target is inside path; links leading "
                                               "out of path are always left out."},
            "min_age_s": {"type": "number", "minimum": 0, "default": 2,
                          "description": "Files modified more recently than this are still being written: left "
                                         "for the next run."},
        },
    }

    def list_entries(self) -> Iterator[Entry]:
        """Every settled file under ``path``, sorted by relative name. LocalSourceError when ``path``
        is missing, not a folder, or cannot be listed."""
        root = Path(os.path.expanduser(self.source["path"])).absolute()
        if not root.is_dir():
            raise LocalSourceError(f"{root}: {'not a folder' if root.exists() else 'no such folder'}", path=str(root))
        real_root = root.resolve()
        names: list[str] = []

        def refuse(exc: OSError) -> None:
            raise LocalSourceError(f"cannot list {exc.filename}: {exc.strerror}", path=str(root)) from exc

        follow = self.source["follow_symlinks"]
        for folder, dirs, files in os.walk(root, onerror=refuse, followlinks=follow):
            here = Path(folder)
            if not self.source["recursive"]:
                dirs.clear()
            elif follow:  # a linked folder is walked only when it stays inside the root (no loops out)
                dirs[:] = [d for d in dirs if self._inside(here / d, real_root)]
            rel = here.relative_to(root).as_posix()
            names.extend(f if rel == "." else f"{rel}/{f}" for f in files)
        cutoff = time.time() - self.source["min_age_s"]
        for name in sorted(names):
            path = root.joinpath(*name.split("/"))
            if path.is_symlink() and (not follow or not self._inside(path, real_root)):
                continue
            try:
                stat = path.stat()
            except OSError:  # gone, or a broken link: the download says which
                yield Entry(name, path.as_uri(), handle=path)
                continue
            if stat.st_mtime > cutoff:
                log.info("local_file_not_settled", name=name, min_age_s=self.source["min_age_s"])
                continue
            yield Entry(name, path.as_uri(), size=stat.st_size,
                        identity={"size": str(stat.st_size), "mtime_ns": str(stat.st_mtime_ns)}, handle=path,
                        modified=dt.datetime.fromtimestamp(stat.st_mtime, dt.timezone.utc))

    @staticmethod
    def _inside(path: Path, real_root: Path) -> bool:
        """Does ``path`` (a link, perhaps) lead to somewhere inside the root? Logged when not."""
        target = path.resolve()
        if target == real_root or target.is_relative_to(real_root):
            return True
        log.warning("local_link_outside", name=str(path), target=str(target))
        return False

    def download(self, entry: Entry, sink: FileSink) -> Mapping[str, str]:
        """Copy the file in 1 MiB chunks; a file whose size or mtime changed meanwhile is tried again."""
        path: Path = entry.handle
        try:
            with path.open("rb") as src:
                before = os.fstat(src.fileno())
                while chunk := src.read(CHUNK_SIZE):
                    sink.write(chunk)
                after = os.fstat(src.fileno())
        except FileNotFoundError as exc:
            raise FileVanished(f"{entry.source_uri}: deleted since it was listed") from exc
        except OSError as exc:
            raise LocalSourceError(f"cannot read {entry.source_uri}: {exc.strerror or type(exc).__name__}",
                                   path=str(path)) from exc
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns) or sink.size != after.st_size:
            raise LocalFileChanging(f"{entry.source_uri}: changed while it was read", path=str(path))
        return {"size": str(after.st_size), "mtime_ns": str(after.st_mtime_ns)}
