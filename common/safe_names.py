"""Turn source names into safe, distinct S3 key suffixes.

:func:`safe_relative_name` makes a name safe: no ``..``, no absolute paths, no empty
segments, no control characters or NUL, no backslashes, no unpaired surrogates (names
decoded with ``surrogateescape``), no Windows reserved device names.

:func:`key_name` is the suffix a file lands under (after the destination prefix). Making
names safe is not one-to-one (``a//b.txt``, ``./a/b.txt`` and ``a\\b.txt`` all become
``a/b.txt``), so a name that sanitising changes in any way, or that looks like a name
this rule produces or like an errors document, gets a short digest of the raw name
before its extension: ``x\\ty.txt`` -> ``x_y~3f9a1c2e.txt``. A name sanitising leaves
alone keeps it. Distinct raw names thus get distinct key names, the same ones on every
run, whatever order they come in (docs/KEYS.md).

Local files never use these names: :class:`~common.file_sink.FileSink` picks its own.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass

__all__ = ["DIGEST_CHARS", "ERRORS_SUFFIX", "FileKeys", "file_keys", "key_name", "safe_relative_name"]

#: The suffix of the errors document beside a rejected file; no data key ends with it.
ERRORS_SUFFIX = ".errors.json"
#: Hex characters of the SHA-256 of the raw name put into a changed name.
DIGEST_CHARS = 8

_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)
#: The mark :func:`key_name` puts at the end of a stem; a raw name already ending so is marked too.
_MARKED = re.compile(rf"~[0-9a-f]{{{DIGEST_CHARS}}}$")


def safe_relative_name(name: str) -> str:
    """``name`` as a relative ``/``-separated path that cannot escape its base directory.

    Raises ValueError when nothing usable is left (``""``, ``"/"``, ``"./."``).
    """
    cleaned = _CONTROL.sub("_", name.replace("\\", "/"))
    parts = []
    for part in cleaned.split("/"):
        part = part.strip()
        if part in ("", "."):
            continue
        if part == "..":
            part = "_.."
        if part.split(".")[0].lower() in _RESERVED:
            part = "_" + part
        parts.append(part)
    if not parts:
        raise ValueError(f"source name {name!r} has no usable path segment")
    return "/".join(parts)


def key_name(name: str) -> str:
    """The key suffix of the source-relative ``name``: safe, and distinct for distinct names.

    Raises ValueError when the name has no usable path segment.
    """
    safe = safe_relative_name(name)
    folder, _, base = safe.rpartition("/")
    stem, ext = posixpath.splitext(base)
    if safe == name and not safe.endswith(ERRORS_SUFFIX) and not _MARKED.search(stem):
        return safe
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:DIGEST_CHARS]
    marked = f"{stem}~{digest}{ext}"
    return f"{folder}/{marked}" if folder else marked


@dataclass(frozen=True)
class FileKeys:
    """The keys of one file: where it lands, what it writes, what it makes stale."""

    key: str
    """Where the file lands."""
    writes: tuple[str, ...]
    """Every key written for it: the file, and for a rejected one its errors document."""
    stale: tuple[str, ...]
    """Its copies under the other prefix, removed once it landed: the valid copy of a rejected
    file, or the rejected copy and errors document of a valid one."""


def file_keys(name: str, prefix: str, rejected_prefix: str, rejected: bool) -> FileKeys:
    """The keys of the file ``name`` under the destination's prefixes (docs/KEYS.md).

    Raises ValueError when the name has no usable path segment.
    """
    suffix = key_name(name)
    valid, bad = prefix + suffix, rejected_prefix + suffix
    writes = (bad, bad + ERRORS_SUFFIX) if rejected else (valid,)
    stale = (valid,) if rejected else (bad, bad + ERRORS_SUFFIX)
    # With one prefix for both, the file's own key is never stale.
    return FileKeys(writes[0], writes, tuple(k for k in stale if k not in writes))
