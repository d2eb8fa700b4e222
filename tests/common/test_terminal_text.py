"""Terminal control characters are made visible; ordinary text is left alone."""

from __future__ import annotations

import io
import re

import pytest
import structlog

from common.logger import configure_logging
from common.terminal_text import printable

#: What no text shown on a terminal may contain after printable().
UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


@pytest.mark.parametrize("text,shown", [
    ("plain/ascii_name-1.csv", "plain/ascii_name-1.csv"),
    ("café/日本語 [red]x[/red].json", "café/日本語 [red]x[/red].json"),
    ("a\x1b[2Jb", "a\\x1b[2Jb"),
    ("bell\x07 del\x7f nul\x00", "bell\\x07 del\\x7f nul\\x00"),
    ("one\ntwo\tthree\r", "one\\ntwo\\tthree\\r"),
    ("csi\x9b31m c1\x85", "csi\\x9b31m c1\\x85"),
    ("txt\u202eexe.js", "txt\\u202eexe.js"),
    ("iso\u2066x\u2069 lrm\u200e sep\u2028", "iso\\u2066x\\u2069 lrm\\u200e sep\\u2028"),
])
def test_printable(text: str, shown: str) -> None:
    assert printable(text) == shown
    assert not UNSAFE.search(printable(text))


def test_every_code_point_below_0x3000_is_safe_after_printable() -> None:
    text = "".join(map(chr, range(0x3000)))
    assert not UNSAFE.search(printable(text))
    assert printable(text, keep_newlines=True).count("\n") == 1


def test_console_log_renderer_escapes_values_and_exceptions() -> None:
    stream = io.StringIO()
    configure_logging(None, "console", stream=stream)
    log = structlog.get_logger("test")
    log.warning("file_failed", uri="s3://b/\x1b[31mred\u202e.json", names=["x\x1b"], count=2)
    try:
        raise ValueError("bad \x1b]52;c;aGk=\x07 name")
    except ValueError:
        log.error("crashed", exc_info=True)
    out = stream.getvalue()
    assert not UNSAFE.search(out.replace("\n", ""))
    assert "s3://b/\\x1b[31mred\\u202e.json" in out and "count=2" in out
    assert "ValueError: bad \\x1b]52;c;aGk=\\x07 name" in out
    configure_logging(None, "console", io.StringIO())
