"""The file-source template's filters (issue 13, item 3): include/exclude on the base name or the
relative path, min_size/max_size, newer_than/older_than, on a real folder through the example
``localdir`` module (a FileSource plugin)."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest
from ms_example_plugin.localdir import LocalDirModule

from common.exceptions import ConfigError
from common.interfaces.file_source import glob_matches
from common.job_config import resolve_source
from module_system.contract import make_context


@pytest.mark.parametrize(("name", "pattern", "matches"), [
    ("a.csv", "*.csv", True),
    ("sub/deep/a.csv", "*.csv", True),          # no '/': the base name, at any depth
    ("sub/a_1.csv", "a_*.csv", True),
    ("sub/a.csv", "sub/*.csv", True),           # with '/': the relative path
    ("other/a.csv", "sub/*.csv", False),
    ("sub/deep/a.csv", "sub/**.csv", True),
    ("sub/deep/a.csv", "/sub/**", True),
    ("a.CSV", "*.csv", False),                  # case-sensitive
])
def test_glob_patterns(name: str, pattern: str, matches: bool) -> None:
    assert glob_matches(name, pattern) is matches


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    (root / "in").mkdir(parents=True)
    (root / "skip").mkdir()
    now = time.time()
    for name, size, age_days in [("in/new.csv", 10, 0), ("in/old.csv", 10, 30), ("in/big.csv", 5000, 0),
                                 ("in/tiny.csv", 1, 0), ("skip/new.csv", 10, 0), ("notes.txt", 10, 0)]:
        path = root / name
        path.write_bytes(b"x" * size)
        os.utime(path, (now - age_days * 86400, now - age_days * 86400))
    return root


def listed(folder: Path, **filters: object) -> list[str]:
    source = resolve_source({"path": str(folder), **filters}, LocalDirModule.source_schema)
    module = LocalDirModule(source, make_context())
    return sorted(e.name for e in module.list_entries() if module.wanted(e))


def test_filters_from_the_listing(folder: Path) -> None:
    assert listed(folder) == ["in/big.csv", "in/new.csv", "in/old.csv", "in/tiny.csv", "notes.txt", "skip/new.csv"]
    assert listed(folder, include=["*.csv"], exclude=["skip/*"]) == ["in/big.csv", "in/new.csv", "in/old.csv",
                                                                     "in/tiny.csv"]
    assert listed(folder, include=["in/*"], min_size=2, max_size=100) == ["in/new.csv", "in/old.csv"]
    assert listed(folder, include=["in/*.csv"], newer_than="7d") == ["in/big.csv", "in/new.csv", "in/tiny.csv"]
    assert listed(folder, include=["in/*.csv"], older_than="1w") == ["in/old.csv"]
    week_ago = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=7)).date().isoformat()
    assert listed(folder, include=["in/*.csv"], older_than=week_ago) == ["in/old.csv"]


@pytest.mark.parametrize("value", ["7 days", "yesterday", "1y"])
def test_a_bad_age_is_a_config_error(folder: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="newer_than"):
        resolve_source({"path": str(folder), "newer_than": value}, LocalDirModule.source_schema)


def test_an_impossible_date_fails_the_source_with_a_clear_error(folder: Path) -> None:
    source = resolve_source({"path": str(folder), "newer_than": "2026-02-31"}, LocalDirModule.source_schema)
    module = LocalDirModule(source, make_context())
    with pytest.raises(ConfigError, match="not a duration or date"):
        [e for e in module.list_entries() if module.wanted(e)]
