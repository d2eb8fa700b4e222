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


# ---------------------------------------------------------------------- key_name

from common.safe_names import key_name  # noqa: E402


@pytest.mark.parametrize("raw", ["a/b/c.csv", "x_y.txt", "2024/01/report.json", "README", ".hidden", "a b/c d.txt"])
def test_names_sanitising_leaves_alone_keep_their_key(raw: str) -> None:
    assert key_name(raw) == raw


def test_names_that_sanitise_alike_get_distinct_stable_keys() -> None:
    raws = ["./a/b.txt", "a//b.txt", "a/b.txt", "a\\b.txt", "a /b.txt", "/a/b.txt", "a/./b.txt"]
    keys = [key_name(raw) for raw in raws]
    assert len(set(keys)) == len(raws)
    assert key_name("a/b.txt") == "a/b.txt"
    assert all(k.startswith("a/b~") and k.endswith(".txt") for k in keys if k != "a/b.txt")
    # stable across runs and versions: a re-run must find the same keys
    assert key_name("x\ty.txt") == "x_y~c80694ff.txt"
    assert key_name(" lead.csv") == "lead~" + key_name(" lead.csv")[5:13] + ".csv"


def test_no_data_key_ends_like_an_errors_document() -> None:
    assert not key_name("a.json.errors.json").endswith(".errors.json")
    assert key_name("a.json.errors.json").startswith("a.json.errors~")
    assert not key_name("x/.errors.json").endswith(".errors.json")


def test_a_raw_name_shaped_like_a_marked_one_is_marked_too() -> None:
    marked = key_name("a//b.txt")
    assert key_name(marked) != marked, "a source cannot pick the key another name was moved to"
    assert key_name("b~1234abcd.txt").startswith("b~1234abcd~")
    assert key_name("b~1234abcg.txt") == "b~1234abcg.txt"


def test_unpaired_surrogates_are_replaced_and_marked() -> None:
    raw = "caf\udce9.csv"  # a Latin-1 name decoded with surrogateescape
    key = key_name(raw)
    assert key.startswith("caf_~") and key.endswith(".csv")
    key.encode("utf-8")  # a valid key


def test_file_keys_of_a_valid_and_a_rejected_file() -> None:
    from common.safe_names import file_keys

    valid = file_keys("a/b.csv", "v/", "r/", rejected=False)
    assert (valid.key, valid.writes) == ("v/a/b.csv", ("v/a/b.csv",))
    assert valid.stale == ("r/a/b.csv", "r/a/b.csv.errors.json")
    bad = file_keys("a/b.csv", "v/", "r/", rejected=True)
    assert (bad.key, bad.writes, bad.stale) == ("r/a/b.csv", ("r/a/b.csv", "r/a/b.csv.errors.json"), ("v/a/b.csv",))
    same = file_keys("b.csv", "all/", "all/", rejected=False)
    assert same.stale == ("all/b.csv.errors.json",), "one prefix for both: the file's own key is never stale"
    assert file_keys("b.csv", "all/", "all/", rejected=True).stale == ()
