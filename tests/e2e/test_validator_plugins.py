"""Validator plugins and data-quality rules (issue 14, items 1 and 2), through the CLI.

A test distribution registers validators in ``module_system.validators``
(``tests/e2e/plugins/tsv_validator.py``): the framework picks ``tsv`` from the key a service's
``validate`` section sets, checks its keys against its schema like the built-ins' (exit 2,
one line), and lists it, and the two broken ones with name and package, in ``module-system
modules``. The built-in ``quality`` rules reject duplicates, empty values and a stale feed
with locations; ``min_files`` fails a job that lands too few files.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import PLUGIN_DIR, Project, list_keys

VALIDATORS = {"tsv": "tsv_validator:TsvValidator", "broken": "tsv_validator:BrokenSchema",
              "stray": "tsv_validator:NotAValidator"}


@pytest.fixture()
def validator_plugins(tmp_path: Path, project: Project) -> None:
    info = tmp_path / "site" / "tsv_validator-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tsv_validator\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[module_system.validators]\n" + "".join(f"{name} = {target}\n" for name, target in VALIDATORS.items()))
    project.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tmp_path / "site"), str(PLUGIN_DIR), os.environ.get("PYTHONPATH")) if p)


def drop_folder(tmp_path: Path, files: dict[str, str]) -> Path:
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    old = time.time() - 60
    for name, text in files.items():
        (drop / name).write_text(text)
        os.utime(drop / name, (old, old))
    return drop


def registry(project: Project, bucket: str, drop: Path, validate: dict[str, Any]) -> None:
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"drop": {"type": "local", "source": {"path": str(drop)}, "validate": validate}},
    })


def errors(s3: Any, bucket: str, name: str) -> list[tuple[str, str]]:
    body = s3.get_object(Bucket=bucket, Key=f"data/local/drop/rejected/{name}.errors.json")["Body"].read()
    return [(e["location"], e["message"]) for e in json.loads(body)["errors"]]


def test_modules_lists_validators_and_reports_broken_ones_by_name_and_package(
        project: Project, validator_plugins: None) -> None:
    result = project.cli("modules")
    assert result.returncode == 1, result.stdout  # two plugins do not load
    lines = {line.split()[1]: line for line in result.stdout.splitlines() if line.startswith("validator")}
    assert {"csv", "json", "html", "parquet", "xlsx", "quality", "tsv", "broken", "stray"} <= set(lines)
    assert "tsv_validator 1.0" in lines["tsv"] and "UNAVAILABLE" not in lines["tsv"]
    assert "UNAVAILABLE" in lines["broken"] and "from tsv_validator 1.0" in lines["broken"]
    assert "invalid validate_schema" in lines["broken"]
    assert "UNAVAILABLE" in lines["stray"] and "is not a Validator subclass" in lines["stray"]
    assert "UNAVAILABLE" not in lines["csv"]


def test_a_validator_plugin_is_chosen_by_its_key_and_its_config_errors_read_like_the_built_ins(
        project: Project, validator_plugins: None, s3: Any, bucket: str, tmp_path: Path) -> None:
    drop = drop_folder(tmp_path, {"good.tsv": "a\tb\tc\n1\t2\t3\n", "bad.tsv": "a\tb\tc\n1\t2\n",
                                  "rows.csv": "id\n1\n"})
    registry(project, bucket, drop, {"tsv": {"fields": 3}, "csv": {"columns": ["id"]}})
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 1, result.stderr[-2000:]  # bad.tsv rejected
    valid = sorted(k.rsplit("/", 1)[-1] for k in list_keys(s3, bucket, "data/local/drop/validated/"))
    assert valid == ["good.tsv", "rows.csv"]
    assert errors(s3, bucket, "bad.tsv") == [("line 2", "2 fields, expected 3")]

    def refused(validate: dict[str, Any]) -> str:
        registry(project, bucket, drop, validate)
        run = project.cli("validate", "--batch-file", str(batch))
        assert run.returncode == 2, run.stdout + run.stderr
        [line] = run.stderr.strip().splitlines()
        assert "Traceback" not in run.stderr
        return line

    assert refused({"tsv": {"fields": "three"}}).endswith(
        "service 'drop': key 'validate.tsv.fields': must be of type integer, not string")
    assert refused({"tsv": {"fields": 3, "extra": 1}}).endswith(
        "key 'validate.tsv.extra': unknown key (allowed: fields, header)")
    assert refused({"tsv": {"fields": 5000}}).endswith(
        "key 'validate.tsv.fields': more than 1000 fields is not a TSV we read")
    unknown = refused({"nope": 1})
    assert "key 'validate.nope': unknown key (allowed: " in unknown and "tsv" in unknown and "quality" in unknown
    broken = refused({"broken": {}})
    assert "key 'validate.broken'" in broken and "from tsv_validator 1.0 failed to load" in broken


def test_quality_rules_reject_duplicates_nulls_and_a_stale_feed(project: Project, s3: Any, bucket: str,
                                                                 tmp_path: Path) -> None:
    today = dt.datetime.now(dt.timezone.utc).date().isoformat()
    drop = drop_folder(tmp_path, {
        "fresh.csv": f"id,amount,day\n1,2.5,2026-01-01\n2,3.0,{today}\n",
        "stale.csv": "id,amount,day\n1,2.5,2026-01-01\n2,3.0,2026-01-02\n",
        "dupes.csv": f"id,amount,day\n1,2.5,{today}\n1,,{today}\n3,1.0,{today}\n",
        "events.jsonl": f'{{"order": {{"id": 1}}, "day": "{today}"}}\n{{"order": {{"id": 1}}, "day": "{today}"}}\n',
        "empty.csv": "id,amount,day\n",
    })
    (tmp_path / "any.schema.json").write_text('{"type": "object"}')
    registry(project, bucket, drop, {
        "csv": {"columns": ["id", "amount", "day"], "types": {"id": "int", "day": "date"}},
        "json_schema": str(tmp_path / "any.schema.json"),
        "quality": {"min_rows": 1, "unique": ["id", "$.order.id"], "not_null": ["amount"],
                    "max_age": {"column": "day", "within": "36h"}}})
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 1, result.stderr[-2000:]
    valid = sorted(k.rsplit("/", 1)[-1] for k in list_keys(s3, bucket, "data/local/drop/validated/"))
    assert valid == ["fresh.csv"]
    [stale] = errors(s3, bucket, "stale.csv")
    assert stale[0] == "column 'day'" and stale[1].startswith("stale: the newest value is 2026-01-03T00:00:00+00:00")
    assert "older than max_age 36h" in stale[1]
    assert errors(s3, bucket, "dupes.csv") == [
        ("row 3, column 'amount'", "empty value in a not_null column"),
        ("row 3, column 'id'", "duplicate value '1' of unique 'id'")]
    events = errors(s3, bucket, "events.jsonl")
    assert ("line 2: $.order.id", "duplicate value 1 of unique '$.order.id'") in events
    assert ("line 1, column 'amount'", "empty value in a not_null column") in events  # no amount key at all
    assert ("file", "0 rows, fewer than min_rows 1") in errors(s3, bucket, "empty.csv")


def test_min_files_fails_a_job_that_lands_too_few(project: Project, s3: Any, bucket: str, tmp_path: Path) -> None:
    drop = drop_folder(tmp_path, {"a.csv": "id\n1\n", "b.csv": "id\nx\n"})
    registry(project, bucket, drop, {"csv": {"columns": ["id"], "types": {"id": "int"}},
                                     "quality": {"min_files": 2}})
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 1, result.stderr[-2000:]
    report = json.loads((project.root / "report.json").read_text())
    [job] = report["jobs"]
    assert job["status"] == "failed"
    assert job["error"] == "1 valid file(s) landed, fewer than validate.quality.min_files (2)"
    assert list_keys(s3, bucket, "data/local/drop/validated/") == ["data/local/drop/validated/a.csv"]
