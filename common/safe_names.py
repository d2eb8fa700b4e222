"""Turn source names into safe relative paths and S3 key suffixes.

No ``..``, no absolute paths, no empty segments, no control characters or NUL, no
backslashes, no Windows reserved device names. Applied before a source name becomes a
local path or a key.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_RESERVED = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)), *(f"lpt{i}" for i in range(1, 10))}
)


def safe_relative_name(name: str) -> str:
    """``name`` as a relative ``/``-separated path that cannot escape its base directory."""
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
