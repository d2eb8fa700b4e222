"""CsvChecker: header, field counts, every type, encodings and the problem cap."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from common.config_model import CsvRules
from common.problems import MAX_PROBLEMS_PER_FILE, Problem
from common.validators.csv_checker import CsvChecker


def rules(columns: tuple[str, ...] | None = None, types: dict[str, str] | None = None,
          delimiter: str = ",", allow_empty: bool = True) -> CsvRules:
    return CsvRules(columns=columns, types=types or {},  # type: ignore[arg-type]
                    delimiter=delimiter, allow_empty=allow_empty)


def check(tmp_path: Path, content: str | bytes, **kw: object) -> list[Problem]:
    path = tmp_path / "data.csv"
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8", newline="")
    else:
        path.write_bytes(content)
    return CsvChecker(rules(**kw)).check(path)  # type: ignore[arg-type]


def locations(problems: list[Problem]) -> list[str | None]:
    return [p.location for p in problems]


def test_valid_file_has_no_problems(tmp_path: Path) -> None:
    content = "id,date,amount,name\n1,2024-01-31,12.5,alice\n-2,2023-12-01,0,bob\n"
    assert check(tmp_path, content, columns=("id", "date", "amount", "name"),
                 types={"id": "int", "date": "date", "amount": "float"}) == []


@pytest.mark.parametrize(("kind", "good", "bad"), [
    ("int", ["0", "42", "-7", "+7", "007"], ["1.0", "1e3", " 1", "1_000", "x", "٣", "+", "--1"]),
    ("float", ["1.5", "-2", "3e-4", ".5", "nan", "1E10"], ["1,5", "abc", "1.2.3", "e5"]),
    ("date", ["2024-02-29", "1999-12-31"], ["2023-02-29", "2024-1-01", "20240101", "2024-13-01", "2024-01-01T00:00"]),
    ("datetime", ["2024-01-31T10:20:30", "2024-01-31 10:20", "2024-01-31T10:20:30+02:00", "2024-01-31T10:20:30Z"],
     ["2024-01-31T25:00", "yesterday", "31/01/2024 10:00"]),
    ("bool", ["true", "FALSE", "Yes", "no", "1", "0"], ["y", "2", "truth", "on"]),
    ("str", ["anything", "1", "ünïcödé"], []),
])
def test_types(tmp_path: Path, kind: str, good: list[str], bad: list[str]) -> None:
    cells = good + bad
    content = "v\n" + "".join(f'"{c}"\n' for c in cells)
    problems = check(tmp_path, content, columns=("v",), types={"v": kind})
    expected = [f"row {i + 2 + len(good)}, column 'v'" for i in range(len(bad))]
    assert locations(problems) == expected
    assert all(f"not a valid {kind}" in p.message for p in problems)


def test_empty_cells_and_allow_empty(tmp_path: Path) -> None:
    content = "a,b,c\n,,\n1,x,\n"
    types = {"a": "int", "b": "str", "c": "bool"}
    assert check(tmp_path, content, types=types, allow_empty=True) == []
    problems = check(tmp_path, content, types=types, allow_empty=False)
    assert locations(problems) == ["row 2, column 'a'", "row 2, column 'b'", "row 2, column 'c'", "row 3, column 'c'"]
    assert problems[0].message == "empty int value"


def test_header_missing_extra_and_order(tmp_path: Path) -> None:
    cols = ("id", "date", "amount")
    [missing] = check(tmp_path, "id,date\n1,2024-01-01\n", columns=cols)
    assert missing.location == "row 1" and "missing 'amount'" in missing.message
    [extra] = check(tmp_path, "id,date,amount,zzz\n1,2024-01-01,3,4\n", columns=cols)
    assert "unexpected 'zzz'" in extra.message
    [order] = check(tmp_path, "date,id,amount\n2024-01-01,1,3\n", columns=cols)
    assert "out of order" in order.message and "expected id, date, amount" in order.message
    [both] = check(tmp_path, "id,amt,date\n1,2,2024-01-01\n", columns=cols)
    assert "missing 'amount'" in both.message and "unexpected 'amt'" in both.message


def test_rows_still_checked_by_name_when_header_differs(tmp_path: Path) -> None:
    problems = check(tmp_path, "amount,id\n1.5,x\n", columns=("id", "amount"), types={"id": "int", "amount": "float"})
    assert locations(problems) == ["row 1", "row 2, column 'id'"]


def test_duplicate_and_untyped_header_columns(tmp_path: Path) -> None:
    [dup] = check(tmp_path, "a,b,a\n1,2,3\n")
    assert "duplicate" in dup.message and "'a'" in dup.message
    [absent] = check(tmp_path, "a,b\n1,2\n", types={"c": "int"})
    assert "'c'" in absent.message and absent.location == "row 1"


def test_wrong_field_count_and_blank_lines(tmp_path: Path) -> None:
    content = "a,b\n1,2\n\n1\n1,2,3\n1,2\n"
    problems = check(tmp_path, content, types={"a": "int"})
    assert locations(problems) == ["row 4", "row 5"]
    assert problems[0].message == "expected 2 fields, found 1"
    assert problems[1].message == "expected 2 fields, found 3"


def test_row_numbers_count_the_header_as_row_one(tmp_path: Path) -> None:
    content = "id,amount\n" + "".join(f"{i},{'bad' if i in (3, 7) else '1.0'}\n" for i in range(10))
    problems = check(tmp_path, content, types={"amount": "float"})
    assert locations(problems) == ["row 5, column 'amount'", "row 9, column 'amount'"]
    assert problems[0].message == "not a valid float: 'bad'"


def test_quoted_cells_with_delimiters_and_newlines(tmp_path: Path) -> None:
    content = 'id,text\n1,"a, b"\n2,"line\nbreak"\nx,ok\n'
    assert locations(check(tmp_path, content, types={"id": "int"})) == ["row 4, column 'id'"]


def test_delimiter(tmp_path: Path) -> None:
    content = "id;amount\n1;2.5\n2;x\n"
    problems = check(tmp_path, content, columns=("id", "amount"), types={"amount": "float"}, delimiter=";")
    assert locations(problems) == ["row 3, column 'amount'"]
    [header] = check(tmp_path, content, columns=("id", "amount"))
    assert header.location == "row 1"
    tabbed = "id\tamount\n1\t2.5\n"
    assert check(tmp_path, tabbed, columns=("id", "amount"), types={"amount": "float"}, delimiter="\t") == []


def test_bom_is_ignored(tmp_path: Path) -> None:
    content = "\ufeffid,amount\r\n1,2\r\n".encode()
    assert check(tmp_path, content, columns=("id", "amount"), types={"id": "int"}) == []


def test_invalid_utf8_is_located(tmp_path: Path) -> None:
    content = b"id,name\n1,ok\n2,caf\xe9\n3,x\n4,\xff\xfe\n"
    problems = check(tmp_path, content, columns=("id", "name"), types={"id": "int"})
    assert locations(problems) == ["row 3", "row 5"]
    assert "invalid UTF-8" in problems[0].message
    # other checks still run on the rest of such a file
    content = b"\xef\xbb\xbfid,name\n1,caf\xe9\nx,ok\n"
    assert locations(check(tmp_path, content, columns=("id", "name"), types={"id": "int"})) == [
        "row 2", "row 3, column 'id'"]


def test_invalid_utf8_in_header(tmp_path: Path) -> None:
    problems = check(tmp_path, b"id,n\xe4me\n1,2\n", columns=("id", "name"))
    assert problems[0].location == "row 1" and "invalid UTF-8" in problems[0].message


def test_empty_file(tmp_path: Path) -> None:
    [problem] = check(tmp_path, b"", columns=("a",))
    assert problem.location == "row 1" and "empty" in problem.message
    [blank] = check(tmp_path, "\n\n")
    assert "empty" in blank.message


def test_header_only_is_valid(tmp_path: Path) -> None:
    assert check(tmp_path, "a,b\n", columns=("a", "b"), types={"a": "int"}) == []


def test_problem_cap_counts_the_rest(tmp_path: Path) -> None:
    bad_rows = MAX_PROBLEMS_PER_FILE + 57
    content = "n\n" + "x\n" * bad_rows + "1\n"
    problems = check(tmp_path, content, types={"n": "int"})
    assert len(problems) == MAX_PROBLEMS_PER_FILE + 1
    assert problems[MAX_PROBLEMS_PER_FILE - 1].location == f"row {MAX_PROBLEMS_PER_FILE + 1}, column 'n'"
    assert problems[-1].location is None and problems[-1].message.startswith("57 more")


def test_oversized_field_is_a_problem_and_checking_goes_on(tmp_path: Path) -> None:
    content = "a,b\n" + '1,"' + "x" * 200_000 + '"\nz,2\n'
    problems = check(tmp_path, content, types={"a": "int"})
    assert locations(problems) == ["row 2", "row 3, column 'a'"]
    assert "unreadable" in problems[0].message


def test_one_checker_is_shared_by_threads(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("id\n" + "1\n" * 5000)
    bad.write_text("id\n" + "x\n" * 5000)
    checker = CsvChecker(rules(columns=("id",), types={"id": "int"}))
    results: list[tuple[str, int]] = []
    lock = threading.Lock()

    def run(path: Path) -> None:
        for _ in range(5):
            n = len(checker.check(path))
            with lock:
                results.append((path.name, n))

    threads = [threading.Thread(target=run, args=(p,)) for p in (good, bad) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {r for r in results} == {("good.csv", 0), ("bad.csv", MAX_PROBLEMS_PER_FILE + 1)}
