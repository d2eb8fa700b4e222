"""The CSV checker's fast accept path: one RE2 pass (google-re2) over the file's raw bytes.

It can only say "this file is valid". :class:`~common.validators.csv_checker.CsvChecker`
asks it first and runs its exact, row-by-row checker whenever the answer is not a sure
yes, so verdicts and messages never depend on this module; it must only never accept
a file the exact checker would not.

How: the rows after the header must match one regular expression built from the header
and the rules, a grammar of what Python's ``csv.reader`` (default dialect, ``strict``
off) reads as records whose every cell passes its type test, written so that it also
parses the bytes the way ``csv.reader`` does:

* a record is ``field (delimiter field)*`` ending with ``\\r\\n``, ``\\r`` or ``\\n`` (the
  last one may end the file instead); an empty line is a blank line;
* an unquoted field holds no quote, delimiter, line break or NUL; a quoted field is
  ``"..."`` with ``""`` for a quote inside, followed by a delimiter or a line break,
  so that ``a"b`` or ``"a"b`` (which the reader takes in its own lenient way) never match;
* a typed cell, bare or quoted, matches a subset of what its test accepts (below); an
  empty cell only when ``allow_empty``; a non-typed cell anything well-formed;
* every byte is well-formed UTF-8 (the table of RFC 3629: no surrogates, no overlong
  forms), as Python's strict decoder wants; NUL never passes (``csv`` rejects it before 3.11).

Bytes are matched in ranges of at most ``min(csv.field_size_limit(), 128 KiB)`` bytes
cut after a line break, so no cell of an accepted file can be over the field size limit;
a cut falls where the count of quotes since the last cut is even, and a range that does
not end where a record ends does not match. The header must be one plain line (no
quote, no NUL, no lone ``\\r``), and the checker compares it to its rules as usual.

=========  ==========================================================================
int        ``[+-]?[0-9]+`` (the same set as the exact test)
float      ``[+-]?([0-9]+.?[0-9]*|.[0-9]+)([eE][+-]?[0-9]+)?``; ``nan``, ``inf``,
           ``1_000``, spaces... go to the exact path
date       ``YYYY-MM-DD``, a real calendar day, year 0001 to 9999
datetime   such a date, optionally followed by ``T`` or a space and ``HH:MM``,
           ``HH:MM:SS``, ``HH:MM:SS.fff`` or ``HH:MM:SS.ffffff`` (hours 00-23, minutes and
           seconds 00-59), optionally then ``Z``, ``z`` or ``+HH:MM``/``-HH:MM`` (00-23,
           00-59): forms ``datetime.fromisoformat`` reads in Python 3.10 and later
bool       ``true false yes no 1 0`` in any ASCII case
=========  ==========================================================================
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from functools import lru_cache
from typing import IO, Any

__all__ = ["DELIMITERS", "file_pattern", "read_header", "records_match"]

#: Delimiters the fast path handles: none of them can appear in a typed value's pattern.
DELIMITERS = frozenset(",;\t|")
#: Largest range of bytes matched as one value (its cells can be no longer).
MAX_RANGE = 128 << 10
#: Below this field size limit the fast path is not tried.
MIN_RANGE = 4 << 10
#: Bytes read at a time (what a check holds in memory, with at most one range carried over).
READ_SIZE = 1 << 20

# -- value patterns (RE2 syntax, matched on bytes: RE2 compiled in Latin-1 mode)

_INT = r"[+-]?[0-9]+"
_FLOAT = r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
_YEAR = r"(?:[0-9]{3}[1-9]|[0-9]{2}[1-9][0-9]|[0-9][1-9][0-9]{2}|[1-9][0-9]{3})"  # not 0000
_LEAP_YEAR = r"(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = (r"(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
              r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
              r"|02-(?:0[1-9]|1[0-9]|2[0-8]))")
_DATE = rf"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.(?:[0-9]{3}|[0-9]{6}))?)?"
_OFFSET = r"(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
_DATETIME = rf"{_DATE}(?:[T ]{_TIME}{_OFFSET}?)?"
_BOOL = r"(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee]|[Yy][Ee][Ss]|[Nn][Oo]|1|0)"

#: The fast pattern of each typed value (``str`` is handled as "any non-empty cell").
VALUE_PATTERNS: dict[str, str] = {"int": _INT, "float": _FLOAT, "date": _DATE, "datetime": _DATETIME,
                                  "bool": _BOOL}

#: A well-formed UTF-8 sequence of two to four bytes.
_MULTIBYTE = (r"(?:[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}"
              r"|\xed[\x80-\x9f][\x80-\xbf]|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}"
              r"|\xf4[\x80-\x8f][\x80-\xbf]{2})")
#: A record's end: a line break, or the end of the data (``$`` matches nowhere else).
_END = r"(?:\r\n?|\n|$)"


def _ascii_class(excluded: str) -> str:
    """An RE2 class of the ASCII characters 0x01-0x7f but ``excluded`` (NUL is always out)."""
    out = set(map(ord, excluded)) | {0}
    ranges: list[str] = []
    start = None
    for code in range(0x81):
        if code < 0x80 and code not in out:
            if start is None:
                start = code
        elif start is not None:
            end = code - 1
            ranges.append(f"\\x{start:02x}" if start == end else f"\\x{start:02x}-\\x{end:02x}")
            start = None
    return "[" + "".join(ranges) + "]"


def _field(kind: str | None, allow_empty: bool, delimiter: str) -> str:
    """One field: ``kind`` None for a column whose cells are not checked, ``str`` for "not empty"."""
    if kind is None or kind == "str":
        bare = f"(?:{_ascii_class(delimiter + chr(13) + chr(10) + chr(34))}|{_MULTIBYTE})"
        quoted = f'(?:{_ascii_class(chr(34))}|""|{_MULTIBYTE})'
        many = "*" if kind is None else "+"
        return f'(?:{bare}{many}|"{quoted}{many}")'
    value = VALUE_PATTERNS[kind]
    if allow_empty:
        return f'(?:(?:{value})?|"(?:{value})?")'
    return f'(?:{value}|"{value}")'


def file_pattern(kinds: Sequence[str | None], allow_empty: bool, delimiter: str) -> str:
    """The pattern a range of whole records must match; ``kinds``: each column's checked type or None."""
    if delimiter not in DELIMITERS:
        raise ValueError(f"no fast pattern for delimiter {delimiter!r}")
    row = f"\\x{ord(delimiter):02x}".join(_field(kind, allow_empty, delimiter) for kind in kinds)
    return f"^(?:(?:{row})?{_END})*$"


def read_header(fh: IO[bytes], delimiter: str, max_bytes: int) -> list[str] | None:
    """The header of a binary file positioned at its start, when it is one plain line.

    Plain: at most ``max_bytes``, UTF-8 (after an optional BOM), no quote, NUL or ``\\r``
    but in a final ``\\r\\n``, not blank. Leaves ``fh`` at the first byte after the line.
    None when the line is anything else (the caller then leaves the file to the exact path).
    """
    line = fh.readline(max_bytes + 1)
    if len(line) > max_bytes:
        return None
    if line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    if line.endswith(b"\r\n"):
        line = line[:-2]
    elif line.endswith(b"\n"):
        line = line[:-1]
    if not line or b'"' in line or b"\r" in line or b"\0" in line:
        return None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return None
    header = text.split(delimiter)
    if next(csv.reader([text], delimiter=delimiter), None) != header:  # cannot differ; belt and braces
        return None
    return header


_re2: Any = None


def _engine() -> Any:
    """The ``re2`` module (google-re2), imported on first use; False when it is not installed."""
    global _re2
    if _re2 is None:
        try:
            import re2
        except ImportError:
            re2 = False
        _re2 = re2
    return _re2


def available() -> bool:
    """Whether RE2 can be imported (imports it)."""
    return bool(_engine())


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> Any:
    """``pattern`` compiled once for all files (matching bytes: Latin-1, one byte a character)."""
    re2 = _engine()
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    options.max_mem = 64 << 20  # the DFA's budget; a pattern past it is refused, never slow
    return re2.compile(pattern.encode("latin-1"), options)


def records_match(fh: IO[bytes], pattern: str, max_range: int, read_size: int | None = None) -> bool:
    """Whether the rest of ``fh`` is whole records matching ``pattern``, read ``read_size`` at a time.

    Each matched range is at most ``max_range`` bytes and ends after a ``\\n`` (or at the
    end of the file); a line longer than that, like any range that does not match, makes
    the answer False at once. RE2 runs without the GIL, so other threads go on meanwhile.
    """
    if not _engine():
        return False
    regex = _compiled(pattern)
    read_size = read_size or READ_SIZE
    carry = b""
    while True:
        block = fh.read(read_size)
        if not block:
            return not carry or regex.fullmatch(carry) is not None
        data = carry + block if carry else block
        view = memoryview(data)
        start, size = 0, len(data)
        quoted = b'"' in data
        while size - start > max_range:
            cut = data.rfind(b"\n", start, start + max_range)
            if quoted and cut >= 0:
                cut = _even_cut(data, start, cut)
            if cut < 0:
                return False
            if regex.fullmatch(view[start:cut + 1]) is None:
                return False
            start = cut + 1
        carry = data[start:]


def _even_cut(data: bytes, start: int, cut: int) -> int:
    """The last ``\\n`` at or before ``cut`` with an even number of quotes since ``start``; -1 if none."""
    odd = data.count(b'"', start, cut) & 1
    while odd:
        previous = data.rfind(b"\n", start, cut)
        if previous < 0:
            return -1
        odd ^= data.count(b'"', previous, cut) & 1
        cut = previous
    return cut
