"""The built-in ``quality`` validator (common/validators/quality.py) on its own."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from common.config_model import CsvRules, ValidateConfig
from common.exceptions import ConfigError
from common.interfaces.validator import ValidatorSetup
from common.validators import ValidatorSet
from common.validators.quality import QualityValidator, parse_duration

SETUP = ValidatorSetup("svc", Path("."))


def quality(**rules: Any) -> QualityValidator:
    return QualityValidator({"quality": rules}, SETUP)


def test_durations() -> None:
    assert parse_duration("36h") == dt.timedelta(hours=36)
    assert parse_duration("1.5d") == dt.timedelta(hours=36)
    assert parse_duration("2w") == dt.timedelta(days=14)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")
    with pytest.raises(ConfigError):
        quality(max_age={"column": "d", "within": "3 days"})


def test_row_counts(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("id\n1\n2\n\n3\n")
    assert quality(min_rows=3, max_rows=3).check(path, "a.csv") == []
    assert [p.message for p in quality(min_rows=4).check(path, "a.csv")] == ["3 rows, fewer than min_rows 4"]
    assert [p.message for p in quality(max_rows=2).check(path, "a.csv")] == ["3 rows, more than max_rows 2"]


def test_unique_keeps_hashes_and_reports_each_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("id,day,store\n1,d1,s1\n2,d1,s2\n1,d2,s1\n,d1,s1\n,d3,s3\n")
    problems = quality(unique=["id", ["day", "store"]]).check(path, "a.csv")
    assert [(p.location, p.message) for p in problems] == [
        ("row 4, column 'id'", "duplicate value '1' of unique 'id'"),
        ("row 5, key 'day+store'", "duplicate value ('d1', 's1') of unique 'day+store'"),
    ]


def test_not_null_and_json_paths(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('{"a": {"b": 1}, "n": 2}\n{"a": {"b": null}, "n": ""}\nnot json\n{"a": {}}\n')
    problems = quality(not_null=["$.a.b", "n"]).check(path, "a.jsonl")
    assert [p.location for p in problems] == ["line 2: $.a.b", "line 2, column 'n'", "line 4: $.a.b",
                                             "line 4, column 'n'"]


def test_max_age_on_csv_parquet_and_json(tmp_path: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    fresh = tmp_path / "fresh.csv"
    fresh.write_text(f"day\n2020-01-01\n{now.date().isoformat()}\nnot a date\n")
    assert quality(max_age={"column": "day", "within": "36h"}).check(fresh, "fresh.csv") == []
    old = tmp_path / "old.parquet"
    pq.write_table(pa.table({"at": [now - dt.timedelta(days=3), now - dt.timedelta(days=9)]}), old)
    [stale] = quality(max_age={"column": "at", "within": "2d"}).check(old, "old.parquet")
    assert stale.location == "column 'at'" and stale.message.startswith("stale: the newest value is")
    doc = tmp_path / "a.json"
    doc.write_text(json.dumps([{"t": "2026-01-01T00:00:00Z"}]))
    [none] = quality(max_age={"column": "x", "within": "1d"}).check(doc, "a.json")
    assert none.message == "max_age: no date or datetime value in 'x'"


def test_quality_runs_beside_the_format_rules_also_inside_compressed_files(tmp_path: Path) -> None:
    rules = CsvRules(("id",), {"id": "int"}, ",", True)
    config = ValidateConfig(None, None, rules, None, validators=(("csv", {}), ("quality", {"quality": {"unique": ["id"]}})))
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(b"id\n1\nx\n1\n"))
    problems = ValidatorSet(config).check_path(path, "a.csv.gz", __import__("common.archives").archives.ExpansionBudget(1 << 20))
    assert [(p.location, p.message) for p in problems or []] == [
        ("row 3, column 'id'", "not a valid int: 'x'"), ("row 4, column 'id'", "duplicate value '1' of unique 'id'")]


def test_only_min_files_checks_no_file(tmp_path: Path) -> None:
    assert not QualityValidator({"quality": {"min_files": 3}}, SETUP).applies_to("a.csv")
