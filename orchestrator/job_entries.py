"""The manifest entries of one job, kept per source attempt.

A job tries its primary source, retries it, then each fallback: each try is an attempt.
The job's result (its status, file counts and bytes, the manifest's ``files``) is that of
its last attempt, the one that served it (or failed last): entries of an attempt that
failed are not the job's result. What such an attempt landed stays accounted for in the
manifest's ``abandoned`` list, unless the last attempt accounts for the same key.

Within an attempt each source URI is handled once: a module that yields a second file
(or failure) with a source URI it already yielded gets that one recorded ``failed``
(``duplicate source_uri``) and not uploaded, so every landed object has one entry.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from common.manifest import FILE_STATUSES, ManifestEntry

__all__ = ["JobEntries"]


class JobEntries:
    """Entries of the current attempt, and what earlier attempts landed. Thread-safe: a job's
    transfers record their files side by side; the manifest keeps the source's order."""

    def __init__(self) -> None:
        self.attempt = 0
        """The current attempt, from 1; 0 before the first."""
        self._files: list[tuple[int, ManifestEntry]] = []
        self._uris: set[str] = set()
        self._landed_before: dict[str, ManifestEntry] = {}
        self._lock = threading.Lock()

    @property
    def files(self) -> list[ManifestEntry]:
        """The current attempt's entries in the source's order (listing order, or the order the
        module yielded them), whatever order parallel transfers finished in."""
        with self._lock:
            return [entry for _, entry in sorted(self._files, key=lambda pair: pair[0])]

    def new_attempt(self) -> int:
        """Start the next attempt: the current one's landed entries become abandoned ones."""
        for entry in self.files:
            if entry.key is not None:
                self._landed_before[entry.key] = entry
        with self._lock:
            self._files, self._uris = [], set()
            self.attempt += 1
            return self.attempt

    def first_sight(self, source_uri: str) -> bool:
        """True the first time this attempt meets ``source_uri`` (and notes it); False after."""
        with self._lock:
            if source_uri in self._uris:
                return False
            self._uris.add(source_uri)
            return True

    def add(self, entry: ManifestEntry, order: int = 0) -> None:
        """Record ``entry``; ``order`` is its place in the source (listing or yield order)."""
        with self._lock:
            self._files.append((order, entry))
            self._uris.add(entry.source_uri)

    def abandoned(self) -> list[ManifestEntry]:
        """Entries of earlier attempts that put an object under a key the last attempt does not account for."""
        current = {e.key for e in self.files if e.key is not None}
        return [e for key, e in self._landed_before.items() if key not in current]

    def counts(self) -> Mapping[str, int]:
        counts: dict[str, int] = dict.fromkeys(FILE_STATUSES, 0)
        for entry in self.files:
            counts[entry.status] += 1
        return counts

    def uploaded_bytes(self) -> int:
        return sum(e.size for e in self.files if e.status == "uploaded")
