"""CsvChecker's fast accept path: never another verdict than the exact checker, and taken on ordinary files.

``CsvChecker.check`` must return exactly what ``check_exact`` (the row-by-row reference)
returns, for every input; ``_fast_accepts`` may only say True for files ``check_exact``
finds valid, and must say True for ordinary valid files (so the fast path is really used).
"""

from __future__ import annotations

import csv
import io
import itertools
import random
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import re2

from common.config_model import CsvRules
from common.problems import Problem
from common.validators import csv_checker, csv_fast
from common.validators.csv_checker import FAST_MIN_BYTES, CsvChecker

REPO = Path(__file__).resolve().parents[2]


def rules(columns: tuple[str, ...] | None = None, types: dict[str, str] | None = None,
          delimiter: str = ",", allow_empty: bool = True) -> CsvRules:
    return CsvRules(columns=columns, types=types or {},  # type: ignore[arg-type]
                    delimiter=delimiter, allow_empty=allow_empty)


def both(path: Path, checker: CsvChecker) -> tuple[list[Problem], bool]:
    """The exact verdict and the fast path's answer, after checking they agree as they must."""
    exact = checker.check_exact(path)
    fast = checker._fast_accepts(path)
    assert checker.check(path) == exact
    if fast:
        assert exact == [], f"fast path accepted an invalid file: {exact[:3]}"
    return exact, fast


@pytest.fixture
def field_limit() -> Iterator[None]:
    old = csv.field_size_limit()
    yield
    csv.field_size_limit(old)


# -- the value patterns: subsets of the exact tests ------------------------------------------------

def _fast_matches(kind: str, cells: list[str]) -> list[str]:
    options = re2.Options()
    options.encoding = re2.Options.Encoding.LATIN1
    regex = re2.compile(f"(?:{csv_fast.VALUE_PATTERNS[kind]})".encode("latin-1"), options)
    return [c for c in cells if regex.fullmatch(c.encode("utf-8", "surrogatepass")) is not None]


def _words(alphabet: str, max_len: int) -> list[str]:
    return ["".join(p) for n in range(1, max_len + 1) for p in itertools.product(alphabet, repeat=n)]


_YEARS = [f"{y:04d}" for y in itertools.chain(range(13), range(96, 105), range(396, 405), range(1896, 1905),
                                              range(1996, 2005), range(2096, 2105), range(9990, 10000))]
_DATES = [f"{y}-{m:02d}-{d:02d}" for y in _YEARS for m in range(14) for d in range(33)]


@pytest.mark.parametrize("kind", ["int", "float", "bool"])
def test_value_pattern_accepts_only_what_the_exact_test_accepts(kind: str) -> None:
    alphabet = {"int": "+-0129 a.\u0663\u00b2", "float": "+-.eE019 _in", "bool": "tTrRuUeEfFaAlLsSyYnNoO01 \u017f"}[kind]
    cells = _words(alphabet, {"int": 4, "float": 4, "bool": 3}[kind])
    if kind == "bool":
        cells += [v for w in ("true", "false", "yes", "no") for v in map("".join, itertools.product(
            *[(ch, ch.upper()) for ch in w]))] + ["fal\u017fe", "\uff34\uff32\uff35\uff25", "true ", "yes\n"]
    accepted = _fast_matches(kind, cells)
    test = csv_checker.CELL_TESTS[kind]  # type: ignore[index]
    assert accepted and all(test(c) for c in accepted)
    if kind in ("int", "bool"):  # for these two the fast pattern is the whole set
        assert set(accepted) == {c for c in cells if test(c)}


def test_date_pattern_is_exactly_the_calendar() -> None:
    cells = _DATES + ["20240131", "2024-1-01", "2024-01-1", "2024-W05-3", "2024-01-31 ", " 2024-01-31", "+2024-01-01"]
    accepted = set(_fast_matches("date", cells))
    assert accepted == {c for c in cells if csv_checker._is_date(c)}
    assert {"2004-02-29", "2000-02-29", "0004-02-29", "0400-02-29"} <= accepted
    assert not {"2003-02-29", "1900-02-29", "2100-02-29", "0000-01-01", "0000-02-29", "2004-04-31"} & accepted


def test_datetime_pattern_accepts_only_what_fromisoformat_accepts() -> None:
    days = ["2024-02-29", "2023-02-29", "0001-01-01", "0000-01-01", "9999-12-31", "2024-04-31", "2024-1-01"]
    times = [""] + [f"{sep}{h}{rest}" for sep in "T t_" for h in ("00", "09", "23", "24", "7")
                    for rest in (":00", ":59", ":60", ":59:59", ":59:60", ":00:00.1", ":00:00.123", ":00:00.12345",
                                 ":00:00.123456", ":00:00.1234567", ":00:00,123", "", "00", "0000")]
    offsets = ["", "Z", "z", "+00:00", "-23:59", "+24:00", "+23:60", "+0200", "+02", "+02:00:00", "Z+01:00", " Z"]
    cells = [d + t + o for d in days for t in times for o in (offsets if t else ["", "Z", "+01:00"])]
    accepted = _fast_matches("datetime", cells)
    assert len(accepted) > 400
    assert all(csv_checker._is_datetime(c) for c in accepted)
    for exact_only in ("2024-02-29T10", "2024-02-29T10:00:00.1", "2024-02-29T10:00+0200", "2024-02-29Z"):
        assert exact_only not in accepted  # not read alike by every Python >= 3.10


# -- explicit tricky inputs -----------------------------------------------------------------------

TYPES = {"i": "int", "f": "float", "d": "date", "t": "datetime", "b": "bool", "s": "str"}
COLS = ("i", "f", "d", "t", "b", "s")
GOOD_ROW = "7,1.5,2024-02-29,2024-02-29T10:20:30Z,true,x"


def _row(**cells: str) -> str:
    base = dict(zip(COLS, GOOD_ROW.split(",")))
    base.update(cells)
    return ",".join(base[c] for c in COLS)


def _typed(cell_col: str, cells: list[str]) -> list[tuple[str, str]]:
    return [(f"{cell_col}={c!r}", "i,f,d,t,b,s\n" + _row(**{cell_col: c}) + "\n" + GOOD_ROW + "\n") for c in cells]


#: (id, content, rules kwargs, expected fast answer: True = must be taken, False = must not, None = either)
CASES: list[tuple[str, str | bytes, dict[str, object], bool | None]] = []


def _add(cases: Sequence[tuple[str, str | bytes]], kw: dict[str, object], fast: bool | None) -> None:
    CASES.extend((name, content, kw, fast) for name, content in cases)


_typed_kw: dict[str, object] = {"columns": COLS, "types": TYPES}
_strict_kw: dict[str, object] = {"columns": COLS, "types": TYPES, "allow_empty": False}
_add(_typed("i", ["0", "42", "-7", "+7", "007", "9" * 60]), _typed_kw, True)
_add(_typed("i", [" 1", "1 ", "1_000", "1.0", "1e3", "\u0663", "\u00b2", "+", "--1", "x", "0x10"]), _typed_kw, False)
_add(_typed("f", ["1.5", "-2", "3e-4", ".5", "1E10", "1.", "+.5e+3", "-0", "00.00"]), _typed_kw, True)
_add(_typed("f", ["nan", "NaN", "inf", "-Infinity", "1_000", " 1.5", "1.5 ", "\u0663"]), _typed_kw, False)  # exact only
_add(_typed("f", ["1,5", "abc", "1.2.3", "e5", ".", "1e", "0x1p3"]), _typed_kw, False)
_add(_typed("d", ["2024-02-29", "2000-02-29", "0001-01-01", "9999-12-31", "2023-04-30"]), _typed_kw, True)
_add(_typed("d", ["2023-02-29", "1900-02-29", "0000-01-01", "20240131", "2024-1-01", "2024-13-01", "2024-04-31",
                  "2024-W05-3", "2024-01-01T00:00", "2024-00-10"]), _typed_kw, False)
_add(_typed("t", ["2024-01-31T10:20:30", "2024-01-31 10:20", "2024-01-31T10:20:30+02:00", "2024-01-31T10:20:30Z",
                  "2024-01-31T10:20:30z", "2024-01-31", "2024-01-31T23:59:59.123", "2024-01-31T00:00:00.123456-23:59",
                  "2024-02-29T00:00"]), _typed_kw, True)
_add(_typed("t", ["2024-01-31T10", "2024-01-31Z", "2024-01-31T10:20:30.1", "2024-01-31T10:20+0200",
                  "2024-01-31t10:20"]), _typed_kw, None)  # valid or not depending on the Python version: exact path
_add(_typed("t", ["2024-01-31T24:00", "2024-01-31T10:60", "2024-01-31T10:20:60", "2023-02-29T00:00", "yesterday",
                  "31/01/2024 10:00", "0000-01-01T00:00", "2024-01-31T10:20:30+24:00"]), _typed_kw, False)
_add(_typed("b", ["true", "FALSE", "Yes", "no", "1", "0", "tRuE", "nO"]), _typed_kw, True)
_add(_typed("b", ["y", "2", "truth", "on", "fal\u017fe", "\uff34\uff32\uff35\uff25", " true", "01"]), _typed_kw, False)
_add(_typed("s", [" ", "\u00fcn\u00efc\u00f6d\u00e9", "\U0001f600", "a b", "\u00a0"]), _strict_kw, True)
_add(_typed("s", [""]), _strict_kw, False)
_add([(f"empty {c}", "i,f,d,t,b,s\n" + _row(**{c: ""}) + "\n") for c in COLS], _typed_kw, True)
_add([(f"empty {c} strict", "i,f,d,t,b,s\n" + _row(**{c: ""}) + "\n") for c in COLS], _strict_kw, False)
_add([(f'quoted empty {c} strict', "i,f,d,t,b,s\n" + _row(**{c: '""'}) + "\n") for c in COLS], _strict_kw, False)
_add([(f'quoted empty {c}', "i,f,d,t,b,s\n" + _row(**{c: '""'}) + "\n") for c in COLS], _typed_kw, True)
_add([
    ("quoted typed cells", 'i,f,d,t,b,s\n"7","1.5","2024-02-29","2024-02-29 10:00","no","x"\n'),
    ("quoted delimiter", 'i,f,d,t,b,s\n' + _row(s='"a, b"') + "\n"),
    ("quoted newlines", 'i,f,d,t,b,s\n' + _row(s='"line\nbreak\r\nand ""quotes"""') + "\n" + GOOD_ROW + "\n"),
    ("doubled quotes", 'i,f,d,t,b,s\n' + _row(s='"""a"""') + "\n"),
    ("crlf", ("i,f,d,t,b,s\r\n" + GOOD_ROW + "\r\n" + GOOD_ROW + "\r\n").encode()),
    ("no final newline", "i,f,d,t,b,s\n" + GOOD_ROW + "\n" + GOOD_ROW),
    ("blank lines", "i,f,d,t,b,s\n\n" + GOOD_ROW + "\n\n\r\n" + GOOD_ROW + "\n\n"),
    ("bom", b"\xef\xbb\xbf" + ("i,f,d,t,b,s\r\n" + GOOD_ROW + "\r\n").encode()),
    ("header only", "i,f,d,t,b,s\n"),
    ("header only, no newline", "i,f,d,t,b,s"),
    ("utf-8 text", ("i,f,d,t,b,s\n" + _row(s="日本語 😀 \u00e9") + "\n").encode()),
], _typed_kw, True)
_add([
    ("semicolon", "i;f;d;t;b;s\n" + GOOD_ROW.replace(",", ";") + "\n"),
], {**_typed_kw, "delimiter": ";"}, True)
_add([
    ("tab", "i\tf\td\tt\tb\ts\n" + GOOD_ROW.replace(",", "\t") + "\n"),
], {**_typed_kw, "delimiter": "\t"}, True)
_add([
    ("pipe", "i|f|d|t|b|s\n" + GOOD_ROW.replace(",", "|") + "\n"),
], {**_typed_kw, "delimiter": "|"}, True)
_add([
    ("colon: not a fast delimiter", "i:f:d:t:b:s\n" + GOOD_ROW.replace(",", ":") + "\n"),
], {**_typed_kw, "delimiter": ":"}, False)
_add([
    ("space: not a fast delimiter", "i f d t b s\n7 1.5 2024-02-29 2024-02-29 true x\n"),
], {**_typed_kw, "delimiter": " "}, False)
_add([
    ("wrong delimiter", "i;f;d;t;b;s\n" + GOOD_ROW.replace(",", ";") + "\n"),
    ("too few fields", "i,f,d,t,b,s\n" + GOOD_ROW + "\n7,1.5\n"),
    ("too many fields", "i,f,d,t,b,s\n" + GOOD_ROW + ",\n"),
    ("header out of order", "f,i,d,t,b,s\n" + GOOD_ROW + "\n"),
    ("header missing a column", "i,f,d,t,b\n7,1.5,2024-02-29,2024-02-29,true\n"),
    ("header extra column", "i,f,d,t,b,s,z\n" + GOOD_ROW + ",1\n"),
    ("header duplicate", "i,f,d,t,b,s,s\n" + GOOD_ROW + ",1\n"),
    ("double bom", b"\xef\xbb\xbf\xef\xbb\xbf" + ("i,f,d,t,b,s\n" + GOOD_ROW + "\n").encode()),
    ("empty file", b""),
    ("blank header", "\n" + GOOD_ROW + "\n"),
    ("bad utf-8 in a cell", ("i,f,d,t,b,s\n" + GOOD_ROW + "\n").encode() + b"7,1.5,2024-02-29,2024-02-29,true,caf\xe9\n"),
    ("surrogate in a cell", (b"i,f,d,t,b,s\n") + b"7,1.5,2024-02-29,2024-02-29,true,\xed\xa0\x80\n"),
    ("overlong in a cell", (b"i,f,d,t,b,s\n") + b"7,1.5,2024-02-29,2024-02-29,true,\xc0\xaf\n"),
    ("above U+10FFFF", (b"i,f,d,t,b,s\n") + b"7,1.5,2024-02-29,2024-02-29,true,\xf4\x90\x80\x80\n"),
    ("truncated utf-8 at the end", (b"i,f,d,t,b,s\n") + b"7,1.5,2024-02-29,2024-02-29,true,\xe6\x97"),
    ("bad utf-8 in the header", b"i,f,d,t,b,\xff\n" + GOOD_ROW.encode() + b"\n"),
    ("huge field", "i,f,d,t,b,s\n" + _row(s='"' + "x" * 200_000 + '"') + "\n"),
    ("huge unquoted field", "i,f,d,t,b,s\n" + _row(s="x" * 200_000) + "\n" + _row(i="z") + "\n"),
], _typed_kw, False)
_add([
    ("quote inside an unquoted cell", "a,b\n1,x\"y\n"),
    ("text after the closing quote", 'a,b\n1,"ab"cd\n'),
    ("quote after a space", 'a,b\n1, "x"\n'),
    ("unclosed quote at the end", 'a,b\n1,"abc\n2,3\n'),
    ("lone cr line ends", "a,b\r1,2\r3,4\r"),
    ("mixed line ends", "a,b\r\n1,2\r3,4\n"),
    ("nul in a cell", "a,b\n1,x\x00y\n"),
    ("quoted header", '"a","b"\n1,2\n'),
    ("field of exactly the limit", 'a,b\n1,"' + "x" * 131072 + '"\n'),
    ("long line of short cells", "a,b\n" + "1," + ",".join(["x"] * 70_000) + "\n"),
], {"types": {"a": "int"}}, None)
_add([
    ("one column: quoted empty vs blank", 'a\n""\n\n1\n'),
    ("one column: spaces", "a\n \n1\n"),
], {"types": {"a": "int"}, "allow_empty": False}, False)
_add([
    ("one column: blank lines only", "a\n\n\n1\n\r\n"),
], {"types": {"a": "int"}, "allow_empty": False}, True)
_add([
    ("no expected columns, typed column absent", "a,b\n1,2\n"),
], {"types": {"c": "int"}}, False)
_add([
    ("no expected columns, any header", "x,a,y\nfoo,1,\nbar,-2,z\n"),
], {"types": {"a": "int"}}, True)


@pytest.mark.parametrize(("content", "kw", "fast"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_same_verdict_as_the_exact_path(tmp_path: Path, content: str | bytes, kw: dict[str, object],
                                        fast: bool | None) -> None:
    path = tmp_path / "data.csv"
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8"))
    else:
        path.write_bytes(content)
    exact, took_fast = both(path, CsvChecker(rules(**kw)))  # type: ignore[arg-type]
    if fast is not None:
        assert took_fast is fast, exact
    if fast:
        assert exact == []


def test_a_quoted_cell_longer_than_the_field_limit_is_never_accepted(tmp_path: Path, field_limit: None) -> None:
    path = tmp_path / "data.csv"
    checker = CsvChecker(rules(types={"a": "int"}))
    for limit in (5000, 131072):
        csv.field_size_limit(limit)
        for size in (limit - 2, limit, limit + 1, limit + 50):
            for cell in ('"' + "x" * size + '"', '"' + "x\n" * (size // 2) + '"'):
                path.write_text(f"a,b\n1,{cell}\n2,y\n")
                exact, fast = both(path, checker)
                assert not fast
                assert bool(exact) == (len(cell) - 2 > limit)


# -- every short input over a tricky alphabet ----------------------------------------------------

@pytest.mark.parametrize(("columns", "types", "allow_empty"), [
    (("a",), {"a": "int"}, False), (("a",), {"a": "int"}, True), (("a",), {}, True), (("a",), {"a": "str"}, False),
    (("a", "b"), {"a": "int"}, True), (("a", "b"), {"b": "int"}, False), (("a", "b"), {"a": "str", "b": "str"}, False),
])
def test_every_short_input_the_pattern_matches_is_valid(columns: tuple[str, ...], types: dict[str, str],
                                                         allow_empty: bool) -> None:
    """All rows texts up to 5 characters of ``a1,"``, LF, CR, space: a match is always a valid file."""
    texts = ["".join(p) for n in range(1, 6) for p in itertools.product('a1,"\n\r ', repeat=n)]
    checker = CsvChecker(rules(columns, types, ",", allow_empty))
    regex = csv_fast._compiled(checker._fast_pattern(list(columns)))
    header = ",".join(columns) + "\n"
    accepted = [t for t in texts if regex.fullmatch(t.encode()) is not None]
    assert len(accepted) > 50
    for text in accepted:
        assert checker._check_rows(io.StringIO(header + text, newline=""), None) == [], repr(text)


# -- random mutations of valid files --------------------------------------------------------------

_TOKENS = ["", " ", "nan", "inf", "1_000", " 1", "+7", "007", "2024-02-29", "2023-02-29", "0000-01-01", "20240131",
           "2024-01-31T10:20", "2024-01-31T24:00", "2024-01-31Z", "2024-01-31T10:20:30.1", "2024-01-31T10:20+0200",
           "TRUE", "yEs", "y", "1.5", ".5", "1e5", "e5", "-", '"', 'a"b', '"a"b', '""', "\r", "\n", "\r\n", ",", ";", "\t",
           "\x00", "\u00e9", "\ufeff", "\u0663", "x" * 300]
_BYTES = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b'"', b"\r", b"\n", b",", b"\x00", b"\xef\xbb\xbf"]


def _valid_rows(rng: random.Random, kinds: list[str | None], n: int, d: str) -> list[str]:
    good = {"int": ["0", "-12", "+7", "123456789012345678901"], "float": ["1.5", "-2e3", ".5", "7"],
            "date": ["2024-02-29", "1999-12-31", "0001-01-01"],
            "datetime": ["2024-01-31T10:20:30Z", "2024-01-31 10:20", "2024-01-31T10:20:30.123456+05:30"],
            "bool": ["true", "No", "1"], "str": ["x", "日本", "a b"], None: ["", "free text", '"q, ""uoted"""']}
    return [d.join(rng.choice(good[k]) for k in kinds) for _ in range(n)]


def test_random_mutations_never_change_the_verdict(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    path = tmp_path / "data.csv"
    valid = fast_valid = invalid = 0
    for _ in range(600):
        width = rng.randint(1, 5)
        kinds: list[str | None] = [rng.choice(["int", "float", "date", "datetime", "bool", "str", None])
                                   for _ in range(width)]
        names = [f"c{i}" for i in range(width)]
        d = rng.choice([",", ",", ";", "\t", "|"])
        checker = CsvChecker(rules(columns=tuple(names) if rng.random() < 0.7 else None,
                                   types={n: k for n, k in zip(names, kinds) if k}, delimiter=d,
                                   allow_empty=rng.random() < 0.5))
        lines = [d.join(names)] + _valid_rows(rng, kinds, rng.randint(0, 40), d)
        eol = rng.choice(["\n", "\n", "\r\n"])
        for _ in range(rng.choice([0, 1, 1, 2])):  # text mutations
            if len(lines) > 1:
                i = rng.randrange(1, len(lines))
                cells = lines[i].split(d)
                cells[rng.randrange(len(cells))] = rng.choice(_TOKENS)
                lines[i] = d.join(cells)
        data = (eol.join(lines) + (eol if rng.random() < 0.9 else "")).encode()
        if rng.random() < 0.15:  # byte mutations
            i = rng.randrange(len(data) + 1)
            data = data[:i] + rng.choice(_BYTES) + data[i:]
        path.write_bytes(data)
        exact, fast = both(path, checker)
        if exact:
            invalid += 1
        else:
            valid += 1
            fast_valid += fast
    assert invalid > 100 and valid > 100
    assert fast_valid > valid * 0.7  # the fast path is really taken on most valid files


# -- files larger than a range and than a read ----------------------------------------------------

def _big_text(rng: random.Random, rows: int, multiline: bool, eol: str = "\n") -> str:
    lines = ["id,day,note,ok"]
    for i in range(rows):
        note = rng.choice(["plain", "", '"a, b"', '"x ""y"""'])
        if multiline and rng.random() < 0.3:
            note = '"two\nlines' + "\r\n" * rng.randint(0, 2) + 'and ""more"""'
        lines.append(f"{i},{2000 + i % 24}-0{1 + i % 9}-1{i % 10},{note},{rng.choice(['yes', 'NO', '0'])}")
    return eol.join(lines) + eol


@pytest.mark.parametrize("read_size", [1000, 4096, 65536, 8 << 20])
@pytest.mark.parametrize("limit", [4096, 131072])
@pytest.mark.parametrize("multiline", [False, True])
def test_ranges_and_reads_cut_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, field_limit: None,
                                       read_size: int, limit: int, multiline: bool) -> None:
    monkeypatch.setattr(csv_fast, "READ_SIZE", read_size)
    csv.field_size_limit(limit)
    rng = random.Random(read_size + limit + multiline)
    checker = CsvChecker(rules(columns=("id", "day", "note", "ok"), types={"id": "int", "day": "date", "ok": "bool"}))
    path = tmp_path / "big.csv"
    text = _big_text(rng, 6000, multiline, rng.choice(["\n", "\r\n"]))
    path.write_text(text, newline="")
    exact, fast = both(path, checker)
    assert exact == [] and fast
    for _ in range(12):  # one bad cell anywhere, a stray quote, or a row too long for the field limit
        i = rng.randrange(len(text) // 2, len(text))
        i = text.index("\n", i) + 1 if "\n" in text[i:-1] else 30
        bad = rng.choice(["x,2024-01-01,,yes\n", "1,2023-02-29,,no\n", "1,2024-01-01,a\"b,no\n", "1,2024-01-01,,maybe\n",
                          "1,2024-01-01," + "z" * (limit + 1) + ",no\n", '1,2024-01-01,"unclosed,no\n'])
        path.write_text(text[:i] + bad + text[i:], newline="")
        both(path, checker)


# -- the fast path is what check() uses; it falls back without RE2 ---------------------------

def test_check_takes_the_fast_path_on_a_valid_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.csv"
    path.write_text(_big_text(random.Random(1), 20_000, True))
    checker = CsvChecker(rules(columns=("id", "day", "note", "ok"), types={"id": "int", "day": "date", "ok": "bool"}))

    def no_exact(_path: Path) -> list[Problem]:
        raise AssertionError("exact path used")

    monkeypatch.setattr(checker, "check_exact", no_exact)
    assert checker.check(path) == []


def test_a_tiny_file_takes_the_fast_path_and_a_threshold_can_keep_it_out(tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    path.write_text("id\n1\n")
    checker = CsvChecker(rules(types={"id": "int"}))
    assert checker._fast_accepts(path, FAST_MIN_BYTES), "the compiled pattern is cached: no fixed cost to avoid"
    assert not checker._fast_accepts(path, min_bytes=1024)
    assert checker.check(path) == []


def test_without_re2_everything_goes_to_the_exact_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(csv_fast, "_re2", False)
    path = tmp_path / "data.csv"
    path.write_text("id\n" + "1\n" * 50_000)
    checker = CsvChecker(rules(types={"id": "int"}))
    assert not checker._fast_accepts(path)
    assert checker.check(path) == []


def test_missing_file_raises_as_before(tmp_path: Path) -> None:
    checker = CsvChecker(rules(types={"id": "int"}))
    with pytest.raises(FileNotFoundError):
        checker.check(tmp_path / "nope.csv")


# -- memory: bounded whatever the file size ------------------------------------------------------

_MEMORY_PROBE = textwrap.dedent("""
    import resource, sys
    from common.config_model import CsvRules
    from common.validators.csv_checker import CsvChecker
    checker = CsvChecker(CsvRules(("id", "day", "note", "ok"), {"id": "int", "day": "date", "ok": "bool"}, ",", True))
    assert checker._fast_accepts(sys.argv[1])  # warm-up: re2 imported, the pattern compiled
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert checker._fast_accepts(sys.argv[2])
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
""")


def test_memory_does_not_grow_with_the_file(tmp_path: Path) -> None:
    block = _big_text(random.Random(2), 16_000, False).split("\n", 1)[1]  # ~0.5 MB of rows, no header
    small, big = tmp_path / "small.csv", tmp_path / "big.csv"
    small.write_text("id,day,note,ok\n" + block)
    with open(big, "w") as fh:
        fh.write("id,day,note,ok\n")
        fh.writelines(block for _ in range((48 << 20) // len(block)))
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(small), str(big)], cwd=REPO, check=True,
                         capture_output=True, text=True, timeout=60).stdout
    growth_mb = int(out.strip())
    assert growth_mb < 32, f"peak RSS grew by {growth_mb} MB checking a {big.stat().st_size >> 20} MB file"


def test_one_checker_shared_by_threads_on_the_fast_path(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    text = _big_text(random.Random(3), 3000, True)
    good.write_text(text)
    bad.write_text(text + "x,2024-01-01,,yes\n")
    checker = CsvChecker(rules(columns=("id", "day", "note", "ok"), types={"id": "int", "day": "date", "ok": "bool"}))
    expected = {good: checker.check_exact(good), bad: checker.check_exact(bad)}
    assert expected[good] == [] and len(expected[bad]) == 1
    failures: list[Path] = []

    def run(path: Path) -> None:
        for _ in range(5):
            if checker.check(path) != expected[path]:
                failures.append(path)

    threads = [threading.Thread(target=run, args=(p,)) for p in (good, bad) * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
