"""``module-system schema``: one JSON Schema (draft 2020-12) with every installed plugin's keys, that
the shipped registry and demo batch pass and a wrong registry fails, checked with jsonschema."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.e2e.helpers import Project

ROOT = Path(__file__).resolve().parents[2]


def schema_of(project: Project, *args: str) -> dict[str, Any]:
    result = project.cli("schema", *args)
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema  # type: ignore[no-any-return]


def problems(schema: dict[str, Any], document: Any) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return sorted(f"{e.json_path}: {e.message}" for e in validator.iter_errors(document))


@pytest.mark.usefixtures("scripted")
def test_the_registry_schema_holds_every_plugin_and_checks_a_registry(project: Project) -> None:
    schema = schema_of(project)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == "https://module-system.dev/schema/registry.json"
    types = schema["$defs"]["service"]["properties"]["type"]["anyOf"][0]["enum"]
    assert {"s3", "ftp", "web", "api", "local", "scripted", "scripted_files"} <= set(types), "plugins included"
    assert "jsonl_log" in schema["$defs"]["destination_entry"]["properties"]["type"]["anyOf"][0]["enum"]
    assert {"json_schema", "csv", "html", "quality"} <= set(schema["$defs"]["validate"]["properties"]), "validators"

    shipped = yaml.safe_load((ROOT / "project_registry.yaml").read_text())
    assert problems(schema, shipped) == []

    bad = copy.deepcopy(shipped)
    bad["services"]["ftp_sales_csv"]["source"]["hots"] = "127.0.0.1"       # a typo in a module key
    bad["services"]["ftp_sales_csv"]["source"]["port"] = "twenty-one"      # not a number nor ${VAR}
    bad["services"]["s3_financial_data"]["destination"]["buckett"] = "x"   # a typo in a destination key
    bad["services"]["s3_financial_data"]["validate"]["jsonschema"] = "x"   # a key no validator owns
    bad["services"]["plugin_one"] = {"type": "scripted", "source": {"files": [{"name": "a"}]},
                                     "destination": [{"type": "jsonl_log", "dirr": "x"}]}
    found = problems(schema, bad)
    assert any("ftp_sales_csv.source" in p and "'hots' was unexpected" in p for p in found), found
    assert any("ftp_sales_csv.source.port" in p for p in found), found
    assert any("s3_financial_data.destination" in p and "buckett" in p for p in found), found
    assert any("plugin_one.source.files[0]" in p and "'uri' is a required property" in p for p in found), found
    assert any("plugin_one.destination" in p and "dirr" in p for p in found), found
    assert any("s3_financial_data.validate" in p and "'jsonschema' was unexpected" in p for p in found), found
    bad["services"]["ftp_sales_csv"]["type"] = "gopher"
    assert any("ftp_sales_csv.type" in p for p in problems(schema, bad))


def test_the_batch_schema_checks_a_batch(project: Project) -> None:
    schema = schema_of(project, "--batch")
    assert schema["$id"] == "https://module-system.dev/schema/batch.json"
    demo = json.loads((ROOT / "demo_batch_jobs.json").read_text())
    assert problems(schema, demo) == []
    demo["jobs"][0]["priority"] = 11
    demo["jobs"][1]["colour"] = "red"
    found = problems(schema, demo)
    assert len(found) == 2 and "jobs[0].priority" in found[0] and "colour" in found[1], found


def test_the_readme_shows_the_editor_line() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "# yaml-language-server: $schema=" in readme and "module-system schema" in readme
