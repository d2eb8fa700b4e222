"""The ``localdir`` source module: files of a local folder, copied into the job's workdir.

An example of a module_system plugin: it imports only the public facade
(``module_system``) and is registered in this package's ``pyproject.toml``::

    [project.entry-points."module_system.modules"]
    localdir = "ms_example_plugin.localdir:LocalDirModule"

Registry keys read (``source`` of a ``type: localdir`` service):

``path``
    The folder to read (required). A relative path is taken from the directory the
    run was started in; ``~`` is expanded.
``include``
    Glob patterns (``fnmatch``, case-sensitive) on a file's base name; default all.
``recursive``
    Walk sub-folders of ``path`` (default true); names keep their sub-folders.

Files are listed once, sorted by their relative name, then copied one at a time in
1 MiB chunks through a hashing sink. Symbolic links to folders are not followed.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import structlog

from module_system import BaseModule, FetchedFile, FetchFailed, FileSink, SourceError

__all__ = ["LocalDirError", "LocalDirModule"]

log = structlog.get_logger(__name__)

#: Bytes copied at a time.
CHUNK_SIZE = 1024 * 1024


class LocalDirError(SourceError):
    """The folder cannot be listed (missing, not a folder, no permission). Field: ``path``."""


class LocalDirModule(BaseModule):
    """Copies the files of one local folder (see the module docstring for its keys)."""

    source_schema: ClassVar[Mapping[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "Local folder to read."},
            "include": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                        "default": ["*"],
                        "description": "Glob patterns on the file's base name; a file matching any is read."},
            "recursive": {"type": "boolean", "default": True, "description": "Walk sub-folders of path."},
        },
    }

    def fetch(self, workdir: Path) -> Iterator[FetchedFile | FetchFailed]:
        """Each file under ``path`` matching ``include``, sorted by relative name.

        Raises :class:`LocalDirError` when ``path`` is missing, is not a folder or cannot
        be listed. A file that cannot be read is yielded as FetchFailed; one deleted
        since the listing is skipped.
        """
        root = Path(self.source["path"]).expanduser()
        if self.ctx.stop.is_set():
            return
        names = self._list(root)
        log.debug("localdir_listed", path=str(root), files=len(names))
        for done, name in enumerate(names):
            if self.ctx.stop.is_set():
                log.info("localdir_fetch_stopped", fetched=done, remaining=len(names) - done)
                return
            file = root.joinpath(*name.split("/"))
            uri = file.absolute().as_uri()
            try:
                yield self.ctx.retry.call(self._copy, file, name, uri, workdir, what=f"read {uri}")
            except FileNotFoundError:
                log.warning("localdir_file_vanished", uri=uri)
            except OSError as exc:
                yield FetchFailed(name, uri, f"cannot read {uri}: {exc.strerror or type(exc).__name__}")

    def _list(self, root: Path) -> list[str]:
        """Relative ``/``-separated names of the matching files, sorted."""
        if not root.exists():
            raise LocalDirError(f"{root}: no such folder", path=str(root))
        if not root.is_dir():
            raise LocalDirError(f"{root}: not a folder", path=str(root))
        patterns = tuple(self.source["include"])
        found: list[str] = []

        def refuse(exc: OSError) -> None:
            raise LocalDirError(f"cannot list {exc.filename}: {exc.strerror}", path=str(root)) from exc

        for folder, dirs, files in os.walk(root, onerror=refuse):
            if not self.source["recursive"]:
                dirs.clear()
            rel = Path(folder).relative_to(root).as_posix()
            prefix = "" if rel == "." else rel + "/"
            found.extend(prefix + f for f in files if any(fnmatch.fnmatchcase(f, p) for p in patterns))
        return sorted(found)

    def _copy(self, file: Path, name: str, uri: str, workdir: Path) -> FetchedFile:
        """One attempt at copying ``file`` into a sink; OSError as the library raised it."""
        with file.open("rb") as src:
            stat = os.fstat(src.fileno())
            identity = {"size": str(stat.st_size), "mtime_ns": str(stat.st_mtime_ns)}
            sink: FileSink
            with self.ctx.new_file(workdir, name, uri, identity) as sink:
                while chunk := src.read(CHUNK_SIZE):
                    sink.write(chunk)
                return sink.finish()
