"""Per-job manifests: what a job saw and what became of each file.

Written to ``_manifests/{service_id}/{job_id}.json`` in the destination bucket at the
end of every job, whatever its status. Holds no credentials: source URIs reach the framework
with the secrets inside URLs masked (:func:`common.secret.redact_url`), and the source
section is summarised without secret keys (:func:`public_source`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from common.problems import Problem
from common.secret import MASK, Secret, is_sensitive_name, redact_url

FileStatus = Literal["uploaded", "skipped_same", "skipped_unchanged", "rejected", "failed"]
FILE_STATUSES: tuple[FileStatus, ...] = ("uploaded", "skipped_same", "skipped_unchanged", "rejected", "failed")
#: Statuses of a file whose content is in place under its key.
LANDED: tuple[FileStatus, ...] = ("uploaded", "skipped_same", "skipped_unchanged")


@dataclass(frozen=True, slots=True)
class DestinationOutcome:
    """What one destination of a fan-out did with a file (the manifest's ``destinations``)."""

    name: str
    status: str
    """``uploaded`` | ``skipped_same`` | ``rejected`` | ``failed``."""
    key: str | None = None
    """Where a file destination holds it; None for a record destination."""
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.key is not None:
            out["key"] = self.key
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    source_uri: str
    key: str | None
    """Where the file landed (valid or rejected prefix); None if it never did."""
    size: int
    sha256: str
    status: FileStatus
    errors: tuple[Problem, ...] = ()
    identity: Mapping[str, str] = field(default_factory=dict)
    unchecked: bool = False
    """Landed under the valid prefix although no rule of the service checked it
    (``on_unchecked: accept``); written as ``"unchecked": true``, left out when False."""
    destinations: tuple[DestinationOutcome, ...] = ()
    """With more than one destination: what each did (``"destinations": {name: {...}}``); the
    entry's ``status`` and ``key`` sum them up (``key``: the first file destination's)."""

    def to_dict(self) -> dict[str, Any]:
        # Spelt out: dataclasses.asdict deep-copies field by field, ~25 us an entry.
        out: dict[str, Any] = {"source_uri": self.source_uri, "key": self.key, "size": self.size, "sha256": self.sha256,
               "status": self.status, "errors": [p.to_dict() for p in self.errors],
               "identity": dict(self.identity)}
        if self.unchecked:
            out["unchecked"] = True
        if self.destinations:
            out["destinations"] = {d.name: d.to_dict() for d in self.destinations}
        return out


def write_manifest(path: Path, head: Mapping[str, Any], files: Iterable[ManifestEntry],
                   abandoned: Iterable[ManifestEntry]) -> tuple[int, str]:
    """Write the manifest document (``head``'s keys, then ``files`` and ``abandoned``) to ``path``
    as compact JSON, one entry at a time, so a job of 100,000 files never holds the whole
    document, as dicts or as text, in memory. Returns its size and SHA-256. ``head`` must
    not be empty."""
    assert head, "a manifest has a run_id, a job_id..."
    digest = hashlib.sha256()
    size = 0
    with open(path, "wb") as out:

        def emit(text: str) -> None:
            nonlocal size
            data = text.encode()
            digest.update(data)
            size += len(data)
            out.write(data)

        emit(json.dumps(dict(head), separators=(",", ":"), default=str)[:-1])  # "{...", open
        for name, entries in (("files", files), ("abandoned", abandoned)):
            emit(f',"{name}":[')
            for number, entry in enumerate(entries):
                emit(("," if number else "") + json.dumps(entry.to_dict(), separators=(",", ":"), default=str))
            emit("]")
        emit("}")
    return size, digest.hexdigest()


def manifest_key(service_id: str, job_id: str) -> str:
    return f"_manifests/{service_id}/{job_id}.json"


def state_key_path(service_id: str, state_key: str) -> str:
    """Where a service's incremental state lives in its first file destination."""
    return f"_state/{service_id}/{state_key}.json"


def merged_state(previous: Any, entries: Iterable[ManifestEntry], head: Mapping[str, Any],
                 cursors: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The incremental state after a job: what ``previous`` (a state document, or None) held,
    with this job's files applied by source URI: a landed file is recorded (key, size, sha256,
    identity), any other outcome removes the URI, so the next run fetches it again. The
    document has a manifest's ``files`` list, so :func:`landed_files` reads both. ``cursors``:
    the watermarks a job that succeeded advanced (:meth:`JobContext.advance_cursor`), merged
    over the ones ``previous`` held (kept as they were when None)."""
    kept = {**state_cursors(previous), **(cursors or {})}
    files = {uri: entry.to_dict() for uri, entry in landed_files(previous).items()}
    for entry in entries:
        if entry.status in LANDED and entry.key:
            files[entry.source_uri] = ManifestEntry(entry.source_uri, entry.key, entry.size, entry.sha256, "uploaded",
                                                    (), entry.identity, entry.unchecked).to_dict()
        else:
            files.pop(entry.source_uri, None)
    return {**head, **({"cursors": kept} if kept else {}), "files": [files[uri] for uri in sorted(files)]}


def state_cursors(document: Any) -> dict[str, Any]:
    """The watermarks (name -> JSON value) an incremental state document holds; empty if none."""
    cursors = document.get("cursors") if isinstance(document, dict) else None
    return dict(cursors) if isinstance(cursors, dict) else {}


def landed_files(document: Any) -> dict[str, ManifestEntry]:
    """The landed files of a manifest ``document`` by source URI; empty if there is none.

    Read for ``incremental`` runs: a file whose identity still matches is not fetched again.
    A manifest that is missing or malformed counts as none (everything is fetched). A file
    that one destination of a fan-out missed is ``failed``, so it is fetched again and the
    destinations that hold it already skip it.
    """
    if not isinstance(document, dict) or not isinstance(document.get("files"), list):
        return {}
    landed = {}
    try:
        for item in document["files"]:
            if item.get("status") in LANDED and item.get("key"):
                landed[item["source_uri"]] = ManifestEntry(
                    item["source_uri"], item["key"], int(item["size"]), item["sha256"], "skipped_unchanged", (),
                    {str(k): str(v) for k, v in (item.get("identity") or {}).items()}, item.get("unchecked") is True)
    except (AttributeError, KeyError, TypeError, ValueError):  # not our manifest: a full run, never a failed one
        return {}
    return landed


def public_source(source: Mapping[str, Any]) -> dict[str, Any]:
    """The source section without secret values, for manifests and reports.

    ``x-secret`` values (:class:`Secret`) are left out; a plain value under a key named
    like a credential (``query: {api_key: ...}``, ``headers: {X-Api-Key: ...}``) becomes
    ``***``; every string has the credentials inside URLs masked (``base_url`` with
    ``user:pw@`` or ``?token=``).
    """
    out: dict[str, Any] = {}
    for key, value in source.items():
        if isinstance(value, Secret):
            continue
        if isinstance(value, Mapping):
            out[key] = public_source(value)
        elif isinstance(value, tuple):
            out[key] = [_public_value(v) for v in value if not isinstance(v, Secret)]
        elif is_sensitive_name(str(key)) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            out[key] = MASK
        else:
            out[key] = _public_value(value)
    return out


def _public_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return public_source(value)
    return redact_url(value) if isinstance(value, str) else value
