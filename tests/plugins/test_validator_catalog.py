"""Validator plugins load through the catalog like modules and destinations: a broken one is
recorded by name and package and the others stay usable; the built-ins' schemas are valid."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from common.exceptions import PluginError
from common.interfaces.validator import VALIDATOR_GROUP, Validator
from common.plugins import ModuleCatalog, default_validators, validator_owners

PLUGIN_DIR = Path(__file__).resolve().parent.parent / "e2e" / "plugins"
BUILT_INS = ["csv", "html", "json", "parquet", "quality", "xlsx"]


@pytest.fixture()
def installed(tmp_path: Path) -> Iterator[ModuleCatalog]:
    info = tmp_path / "tsv_validator-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tsv_validator\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[module_system.validators]\ntsv = tsv_validator:TsvValidator\n"
                                           "broken = tsv_validator:BrokenSchema\nstray = tsv_validator:NotAValidator\n"
                                           "gone = tsv_validator_missing:Nothing\n")
    sys.path[:0] = [str(tmp_path), str(PLUGIN_DIR)]
    importlib.invalidate_caches()
    try:
        yield ModuleCatalog(VALIDATOR_GROUP, Validator, "validate_schema")
    finally:
        sys.path.remove(str(tmp_path))
        sys.path.remove(str(PLUGIN_DIR))


def test_broken_validators_are_reported_by_name_and_package_and_the_others_work(installed: ModuleCatalog) -> None:
    infos = {info.name: info for info in installed.describe()}
    assert set(BUILT_INS) | {"tsv", "broken", "stray", "gone"} <= set(infos)
    assert infos["tsv"].error is None and infos["tsv"].package == "tsv_validator"
    assert "'broken' from tsv_validator 1.0 failed to load" in str(infos["broken"].error)
    assert "invalid validate_schema" in str(infos["broken"].error)
    assert "is not a Validator subclass" in str(infos["stray"].error)
    assert "ModuleNotFoundError" in str(infos["gone"].error)
    with pytest.raises(PluginError, match="stray"):
        installed.load("stray")
    owners = validator_owners(installed)
    assert owners["tsv"] == "tsv" and owners["csv"] == "csv" and owners["json_schema"] == "json"
    assert "broken" not in owners and "stray" not in owners


@pytest.mark.parametrize("name", BUILT_INS)
def test_built_in_validators_are_registered_with_valid_schemas(name: str) -> None:
    catalog = default_validators()
    assert catalog.is_builtin(name)
    schema = catalog.load(name).validate_schema
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object" and schema["properties"]
