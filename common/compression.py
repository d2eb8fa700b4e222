"""Single-file compressions (``.gz``, ``.bz2``, ``.xz``): what a file is once decompressed.

Validation (:mod:`common.validators`) checks such a file by the rules of what it holds, and the
``sql`` destination (:mod:`common.records`) reads its records through the decompressor; both ask
:func:`split_compression` which suffix hides what.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from collections.abc import Callable
from typing import Any

__all__ = ["DECOMPRESSION_ERRORS", "DECOMPRESSORS", "split_compression"]

#: Suffix (lower case) -> ``open(path, mode, ...)`` of its decompressor.
DECOMPRESSORS: dict[str, Callable[..., Any]] = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
#: What a truncated or corrupt compressed file raises while it is read.
DECOMPRESSION_ERRORS: tuple[type[BaseException], ...] = (OSError, EOFError, lzma.LZMAError, zlib.error)


def split_compression(name: str) -> tuple[str, Callable[..., Any] | None]:
    """``("a.csv", gzip.open)`` for ``"a.csv.gz"``; ``(name, None)`` for a name without one."""
    lowered = name.rstrip().lower()
    for suffix, opener in DECOMPRESSORS.items():
        if lowered.endswith(suffix):
            return name.rstrip()[: -len(suffix)], opener
    return name, None
