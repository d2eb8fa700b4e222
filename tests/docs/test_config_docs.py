"""docs/CONFIGURATION.md is generated from the schemas and must stay equal to the generator's output."""

from __future__ import annotations

import difflib
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest

from common.config_docs import DOC_PATH, render, schema_rows
from common.interfaces.base_module import BaseModule, FetchedFile
from common.job_config import _BATCH_SCHEMA, _JOB_SCHEMA, registry_schema
from common.plugins import ModuleInfo

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_md_is_up_to_date() -> None:
    expected = render()
    actual = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
    if actual != expected:
        diff = "".join(list(difflib.unified_diff(actual.splitlines(True), expected.splitlines(True),
                                                 "docs/CONFIGURATION.md", "render()"))[:60])
        pytest.fail("docs/CONFIGURATION.md is out of date with the schemas; "
                    f"run `python -m common.config_docs --write`\n{diff}", pytrace=False)


def _keys(schema: Mapping[str, Any], root: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Every property path of ``schema``, local $refs followed."""
    while "$ref" in schema:
        schema = {**root["$defs"][schema["$ref"].split("/")[-1]], **{k: v for k, v in schema.items() if k != "$ref"}}
    for name, sub in schema.get("properties", {}).items():
        yield prefix + name
        yield from _keys(sub, root, prefix + name + ".")


def test_every_registry_key_is_documented() -> None:
    page = render()
    root = registry_schema()
    service = {"$ref": "#/$defs/service"}
    for key in [*_keys(root, root), *_keys(service, root)]:
        assert f"| `{key}` |" in page, key


def test_every_batch_key_is_documented_with_a_description() -> None:
    rows = {row[0]: row for row in [*schema_rows(_BATCH_SCHEMA), *schema_rows(_JOB_SCHEMA)]}
    batch_part = render().split("## The batch file", 1)[1]
    for key in rows:
        line = next(line for line in batch_part.splitlines() if line.startswith(f"| `{key}` |"))
        assert not line.endswith("|  |"), f"batch key {key} has no description"


def test_rows_show_type_default_required_and_secret() -> None:
    schema = {
        "type": "object", "required": ["host"],
        "properties": {
            "host": {"type": "string", "minLength": 1, "description": "Host."},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 21},
            "password": {"type": "string", "x-secret": True},
            "tls": {"type": ["boolean", "null"], "default": None},
            "sub": {"type": "object", "properties": {"depth": {"type": "integer", "default": 3}}},
        },
    }
    rows = {r[0]: r for r in schema_rows(schema)}
    assert rows["host"] == ("host", "string, non-empty", "**required**", "Host.")
    assert rows["port"][1:3] == ("integer, >= 1, <= 65535", "`21`")
    assert "**secret**" in rows["password"][1]
    assert rows["tls"][1:3] == ("boolean or null", "`null`")
    assert rows["sub.depth"][2] == "`3`"


class _GoodModule(BaseModule):
    """A test module."""

    source_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["where"],
        "properties": {"where": {"type": "string", "description": "Where | to <look>."},
                       "token": {"type": "string", "x-secret": True}},
        "dependentRequired": {"token": ["where"]},
    }

    def fetch(self, workdir: Path) -> Iterator[FetchedFile]:
        return iter(())


class _StubCatalog:
    def describe(self) -> list[ModuleInfo]:
        return [
            ModuleInfo("zeta", "pkg.zeta:Z", "module_system", "0.1.0"),
            ModuleInfo("alpha", "pkg.alpha:A", "module_system", "0.1.0", error="ImportError: boom"),
            ModuleInfo("plugin", "other.p:P", "someone-elses-plugin", "1.0"),
        ]

    def load(self, name: str) -> type[BaseModule]:
        assert name == "zeta"
        return _GoodModule


def test_modules_sorted_unavailable_listed_and_third_party_left_out() -> None:
    page = render(_StubCatalog())
    alpha, zeta = page.index("### `type: alpha` (unavailable)"), page.index("### `type: zeta`")
    assert alpha < zeta
    assert "`pkg.alpha:A` did not load: ImportError: boom" in page
    assert "type: plugin" not in page
    assert "| `where` | string | **required** | Where \\| to &lt;look&gt;. |" in page
    assert "| `token` | string, **secret** |" in page
    assert "`token` needs `where`." in page


def test_command_line_prints_the_page_and_checks_it() -> None:
    out = subprocess.run([sys.executable, "-m", "common.config_docs"], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout == render()
    check = subprocess.run([sys.executable, "-m", "common.config_docs", "--check"], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.returncode == (0 if DOC_PATH.exists() and DOC_PATH.read_text(encoding="utf-8") == render() else 1)
