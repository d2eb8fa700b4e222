"""Source names become safe relative paths and key suffixes."""

from __future__ import annotations

import pytest

from common.safe_names import safe_relative_name


@pytest.mark.parametrize("raw,safe", [
    ("a/b/c.csv", "a/b/c.csv"),
    ("/etc/passwd", "etc/passwd"),
    ("../../secret", "_../_../secret"),
    ("a/./b//c", "a/b/c"),
    ("dir\\win\\file.txt", "dir/win/file.txt"),
    ("bad\x00name\x1f.csv", "bad_name_.csv"),
    ("line\nbreak", "line_break"),
    ("CON", "_CON"),
    ("logs/nul.txt", "logs/_nul.txt"),
    ("com1.csv", "_com1.csv"),
    ("console.csv", "console.csv"),
])
def test_safe_relative_name(raw: str, safe: str) -> None:
    assert safe_relative_name(raw) == safe


@pytest.mark.parametrize("raw", ["", "/", "./.", "//"])
def test_names_without_a_segment_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        safe_relative_name(raw)
