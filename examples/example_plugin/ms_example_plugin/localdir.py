"""The ``localdir`` source module: files of a local folder.

An example of a module_system plugin on the file-source template: it imports only the
public facade (``module_system``), lists entries and copies one, and is registered in this
package's ``pyproject.toml``::

    [project.entry-points."module_system.modules"]
    localdir = "ms_example_plugin.localdir:LocalDirModule"

Registry keys read (``source`` of a ``type: localdir`` service):

``path``
    The folder to read (required). A relative path is taken from the directory the
    run was started in; ``~`` is expanded.
``recursive``
    Walk sub-folders of ``path`` (default true); names keep their sub-folders.
``include``, ``exclude``
    Added by the template (globs on the base name); the framework applies them.

The framework does the rest, as for every :class:`~module_system.FileSource`: it skips
unchanged files (``incremental``), rejects files over ``max_file_bytes``, retries a file,
copies ``transfers`` files at once, stops at a file boundary, and fails the source after
several files in a row failed. Symbolic links to folders are not followed.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

from module_system import Entry, FileSink, FileSource, FileVanished, SourceError

__all__ = ["LocalDirError", "LocalDirModule"]

#: Bytes copied at a time.
CHUNK_SIZE = 1024 * 1024


class LocalDirError(SourceError):
    """The folder, or a file of it, cannot be read. Field: ``path``."""


class LocalDirModule(FileSource):
    """Copies the files of one local folder (see the module docstring for its keys)."""

    source_schema: ClassVar[Mapping[str, Any]] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["path"],
        "properties": {
            "path": {"type": "string", "minLength": 1, "description": "Local folder to read."},
            "recursive": {"type": "boolean", "default": True, "description": "Walk sub-folders of path."},
        },
    }

    def list_entries(self) -> Iterator[Entry]:
        """Every file under ``path``, sorted by relative ``/``-separated name.

        Raises :class:`LocalDirError` when ``path`` is missing, is not a folder or cannot be listed.
        """
        root = Path(self.source["path"]).expanduser()
        if not root.is_dir():
            raise LocalDirError(f"{root}: {'not a folder' if root.exists() else 'no such folder'}", path=str(root))

        def refuse(exc: OSError) -> None:
            raise LocalDirError(f"cannot list {exc.filename}: {exc.strerror}", path=str(root)) from exc

        names: list[str] = []
        for folder, dirs, files in os.walk(root, onerror=refuse):
            if not self.source["recursive"]:
                dirs.clear()
            rel = Path(folder).relative_to(root).as_posix()
            names.extend(f if rel == "." else f"{rel}/{f}" for f in files)
        for name in sorted(names):
            path = root.joinpath(*name.split("/"))
            try:
                stat = path.stat()
            except OSError:  # gone, or a broken link: the download says which
                yield Entry(name, path.absolute().as_uri(), handle=path)
                continue
            yield Entry(name, path.absolute().as_uri(), size=stat.st_size,
                        identity={"size": str(stat.st_size), "mtime_ns": str(stat.st_mtime_ns)}, handle=path,
                        modified=dt.datetime.fromtimestamp(stat.st_mtime, dt.timezone.utc))

    def download(self, entry: Entry, sink: FileSink) -> Mapping[str, str]:
        """Copy the file in 1 MiB chunks; the identity is that of the file as opened."""
        path: Path = entry.handle
        try:
            with path.open("rb") as src:
                stat = os.fstat(src.fileno())
                while chunk := src.read(CHUNK_SIZE):
                    sink.write(chunk)
        except FileNotFoundError as exc:
            raise FileVanished(f"{entry.source_uri}: deleted since it was listed") from exc
        except OSError as exc:
            raise LocalDirError(f"cannot read {entry.source_uri}: {exc.strerror or type(exc).__name__}",
                                path=str(path)) from exc
        return {"size": str(stat.st_size), "mtime_ns": str(stat.st_mtime_ns)}
