"""The ``.parquet`` (pyarrow, row batches) and ``.xlsx`` (openpyxl, read-only) checkers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import openpyxl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.config_model import TableRules
from common.validators import parquet_checker
from common.validators.parquet_checker import ParquetChecker
from common.validators.xlsx_checker import XlsxChecker, cell_passes

TYPES = {"id": "int", "amount": "float", "day": "date"}


def rules(**over: Any) -> TableRules:
    base: dict[str, Any] = {"columns": ("id", "amount", "day"), "types": TYPES, "allow_empty": True}
    return TableRules(**{**base, **over})


def write_parquet(path: Path, table: dict[str, Any], row_group_size: int | None = None) -> Path:
    pq.write_table(pa.table(table), path, row_group_size=row_group_size)
    return path


def write_xlsx(path: Path, rows: list[list[Any]], sheet: str = "Sheet") -> Path:
    book = openpyxl.Workbook()
    ws = book.active
    ws.title = sheet
    for row in rows:
        ws.append(row)
    book.save(path)
    return path


# ------------------------------------------------------------------------------ parquet


def test_valid_parquet(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "a.parquet", {"id": [1, 2], "amount": [1.5, 2.0], "day": [dt.date(2026, 1, 1)] * 2})
    assert ParquetChecker(rules()).check(path) == []


def test_parquet_schema_problems_are_column_locations(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "a.parquet", {"id": [1.5], "amount": [True], "day": [dt.date(2026, 1, 1)]})
    problems = ParquetChecker(rules()).check(path)
    assert [(p.location, p.message) for p in problems] == [
        ("column 'id'", "column type double is not int"), ("column 'amount'", "column type bool is not float")]
    other = write_parquet(tmp_path / "b.parquet", {"amount": [1.0], "id": [1]})
    [header] = ParquetChecker(rules()).check(other)
    assert header.location == "schema" and "missing 'day'" in header.message


def test_parquet_string_columns_are_checked_per_row_across_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parquet_checker, "BATCH_ROWS", 3)  # several batches: row numbers continue
    ids = ["1", "2", "3", "4", "x5", "6", None]
    path = write_parquet(tmp_path / "a.parquet", {"id": ids, "amount": [1.0] * 7, "day": ["2026-01-01"] * 6 + ["bad"]},
                         row_group_size=2)
    problems = ParquetChecker(rules(allow_empty=False)).check(path)
    assert [(p.location, p.message) for p in problems] == [
        ("row 5, column 'id'", "not a valid int: 'x5'"),
        ("row 7, column 'id'", "empty int value"),
        ("row 7, column 'day'", "not a valid date: 'bad'"),
    ]


def test_parquet_rows_against_a_json_schema(tmp_path: Path) -> None:
    schema = {"type": "object", "properties": {"amount": {"type": "number", "minimum": 0},
                                               "day": {"type": "string", "format": "date"}}}
    path = write_parquet(tmp_path / "a.parquet", {"id": [1, 2], "amount": [1.0, -3.0], "day": [dt.date(2026, 1, 1)] * 2})
    [problem] = ParquetChecker(rules(json_schema=schema)).check(path)
    assert problem.location == "row 2: $.amount" and "minimum" in problem.message


def test_not_parquet_and_declared_bombs(tmp_path: Path) -> None:
    bad = tmp_path / "a.parquet"
    bad.write_bytes(b"PAR1 not really a parquet file")
    [problem] = ParquetChecker(rules()).check(bad)
    assert problem.message.startswith("not a valid Parquet file")
    big = write_parquet(tmp_path / "b.parquet", {"id": list(range(200_000)), "amount": [1.0] * 200_000,
                                                   "day": [dt.date(2026, 1, 1)] * 200_000})
    [refused] = ParquetChecker(rules(), max_expanded_bytes=1 << 20).check(big)
    assert "declare" in refused.message and "max_expanded_mb" in refused.message


# ------------------------------------------------------------------------------ xlsx


@pytest.mark.parametrize(("kind", "value", "ok"), [
    ("int", 3, True), ("int", 3.0, True), ("int", 3.5, False), ("int", "12", True), ("int", True, False),
    ("float", 2, True), ("float", "x", False), ("bool", True, True), ("bool", "yes", True), ("bool", 1, False),
    ("date", dt.datetime(2026, 1, 1), True), ("date", dt.datetime(2026, 1, 1, 5), False),
    ("date", "2026-01-01", True), ("datetime", dt.datetime(2026, 1, 1, 5), True), ("str", 5, True)])
def test_xlsx_cell_types(kind: Any, value: Any, ok: bool) -> None:
    assert cell_passes(kind, value) is ok


def test_xlsx_rows_are_checked_like_csv(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "a.xlsx", [
        ["id", "amount", "day"], [1, 2.5, dt.date(2026, 1, 1)], [], [2, "lots", "2026-02-30"], [3, 1, None, "extra"]])
    problems = XlsxChecker(rules()).check(path)
    assert [(p.location, p.message) for p in problems] == [
        ("row 4, column 'amount'", "not a valid float: 'lots'"),
        ("row 4, column 'day'", "not a valid date: '2026-02-30'"),
        ("row 5", "expected 3 fields, found 4"),
    ]


def test_xlsx_header_sheet_and_broken_files(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "a.xlsx", [["id", "day"], [1, None]], sheet="Data")
    [header] = XlsxChecker(rules()).check(path)
    assert header.location == "row 1" and "missing 'amount'" in header.message
    [sheet] = XlsxChecker(rules(sheet="Other")).check(path)
    assert sheet.location == "sheet" and "no sheet named 'Other'" in sheet.message
    assert XlsxChecker(rules(columns=None, types={"id": "int"}, sheet="Data")).check(path) == []
    broken = tmp_path / "b.xlsx"
    broken.write_bytes(b"not a zip")
    assert XlsxChecker(rules()).check(broken)[0].message.startswith("not a valid xlsx file")
    assert json.dumps([p.to_dict() for p in XlsxChecker(rules(), max_expanded_bytes=100).check(path)]).count(
        "compression bomb") == 1
