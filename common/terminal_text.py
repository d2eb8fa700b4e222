"""Text from outside (file names, URIs, keys, error messages) made safe to print on a terminal.

A source controls its file names: an S3 key or FTP name holding ``ESC [ 2 J`` would clear
the operator's screen, ``ESC ] 52`` can write the clipboard on some terminals, and a
bidi override (U+202E) shows ``txt.exe`` as ``exe.txt``. Everything the console shows
(the summary table, the live display, warnings and errors rendered by the console log
format, one-line CLI errors) goes through :func:`printable`, which leaves ordinary text
alone and makes every such character visible as an escape: C0 controls (``\\n``,
``\\t``, ``\\r``, ``\\x1b`` ...), DEL, C1 controls (U+0080-U+009F, including the one-byte
CSI U+009B), and the Unicode bidi and line-separator controls.

JSON output needs none of this: ``json.dumps`` (and structlog's ``JSONRenderer``) writes
every non-ASCII and control character as a ``\\uXXXX`` escape. Text passed to ``rich`` is
handed over as ``rich.text.Text``, never as a markup string, so ``[red]`` in a file name
is shown as it is.
"""

from __future__ import annotations

__all__ = ["printable"]

_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_BIDI_AND_SEPARATORS = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)

_ESCAPES: dict[int, str] = {c: _NAMED.get(chr(c), f"\\x{c:02x}") for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_ESCAPES.update({c: f"\\u{c:04x}" for c in _BIDI_AND_SEPARATORS})
_ESCAPES_KEEP_NEWLINES = {c: s for c, s in _ESCAPES.items() if c != ord("\n")}


def printable(text: str, keep_newlines: bool = False) -> str:
    """``text`` with every terminal control character written as a visible escape.

    One line stays one line (``\\n`` becomes the two characters ``\\n``), unless
    ``keep_newlines`` (multi-line text such as a traceback)."""
    return text.translate(_ESCAPES_KEEP_NEWLINES if keep_newlines else _ESCAPES)
