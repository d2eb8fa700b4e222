"""The built-in validators, registered under ``module_system.validators`` in module_system's own
``pyproject.toml`` like any plugin: ``json`` (``json_schema``), ``csv``, ``html``, ``parquet``,
``xlsx`` (each owning the ``validate`` key of that name) and ``quality``
(:mod:`common.validators.quality`).

Their key schemas are those of ``common/schemas/registry.schema.json`` (``$defs.validate``), so
docs/CONFIGURATION.md documents them; their typed rules come from the service's
:class:`~common.config_model.ValidateConfig` (``setup.validate``), read once by
:mod:`common.job_config` (which also loads the JSON Schema files they name).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from common.config_model import ValidateConfig
from common.interfaces.validator import Validator, ValidatorSetup
from common.problems import Problem

__all__ = ["CsvValidator", "HtmlValidator", "JsonValidator", "ParquetValidator", "XlsxValidator", "owned_keys"]


@cache
def _validate_properties() -> Mapping[str, Any]:
    root = json.loads((Path(__file__).parent.parent / "schemas" / "registry.schema.json").read_text())
    return root["$defs"]["validate"]["properties"]  # type: ignore[no-any-return]


def owned_keys(*keys: str) -> dict[str, Any]:
    """The ``validate_schema`` of a built-in owning ``keys`` of the shipped registry schema."""
    props = _validate_properties()
    return {"type": "object", "properties": {k: props[k] for k in keys}}


def _section(setup: ValidatorSetup) -> ValidateConfig:
    if setup.validate is None:
        raise TypeError("a built-in validator needs setup.validate")
    return setup.validate


class JsonValidator(Validator):
    """``.json`` documents and ``.jsonl``/``.ndjson`` lines against ``validate.json_schema``."""

    validate_schema: ClassVar[Mapping[str, Any]] = owned_keys("json_schema")
    suffixes = (".json", ".jsonl", ".ndjson")

    def __init__(self, config: Mapping[str, Any], setup: ValidatorSetup) -> None:
        super().__init__(config, setup)
        from common.validators.json_checker import JsonSchemaChecker

        schema = _section(setup).json_schema
        if schema is None:
            raise TypeError("validate.json_schema was not loaded")
        self.checker = JsonSchemaChecker(schema)

    def check(self, path: Path, name: str) -> list[Problem]:
        if name.rstrip().lower().endswith(".json"):
            return self.checker.check_document(path)
        return self.checker.check_lines(path)


class CsvValidator(Validator):
    """``.csv`` files against ``validate.csv``."""

    validate_schema: ClassVar[Mapping[str, Any]] = owned_keys("csv")
    suffixes = (".csv",)

    def __init__(self, config: Mapping[str, Any], setup: ValidatorSetup) -> None:
        super().__init__(config, setup)
        from common.validators.csv_checker import CsvChecker

        rules = _section(setup).csv
        assert rules is not None
        self.checker = CsvChecker(rules)

    def check(self, path: Path, name: str) -> list[Problem]:
        return self.checker.check(path)


class HtmlValidator(Validator):
    """``.html``/``.htm`` pages against ``validate.html``."""

    validate_schema: ClassVar[Mapping[str, Any]] = owned_keys("html")
    suffixes = (".html", ".htm")

    def __init__(self, config: Mapping[str, Any], setup: ValidatorSetup) -> None:
        super().__init__(config, setup)
        from common.validators.html_checker import HtmlChecker

        rules = _section(setup).html
        assert rules is not None
        self.checker = HtmlChecker(rules)

    def check(self, path: Path, name: str) -> list[Problem]:
        return self.checker.check(path)


class ParquetValidator(Validator):
    """``.parquet`` files against ``validate.parquet`` (:mod:`common.validators.parquet_checker`)."""

    validate_schema: ClassVar[Mapping[str, Any]] = owned_keys("parquet")
    suffixes = (".parquet",)

    def __init__(self, config: Mapping[str, Any], setup: ValidatorSetup) -> None:
        super().__init__(config, setup)
        from common.validators.parquet_checker import ParquetChecker

        rules = _section(setup).parquet
        assert rules is not None
        self.checker = ParquetChecker(rules, setup.max_expanded_bytes)

    def check(self, path: Path, name: str) -> list[Problem]:
        return self.checker.check(path)


class XlsxValidator(Validator):
    """``.xlsx`` workbooks against ``validate.xlsx`` (:mod:`common.validators.xlsx_checker`)."""

    validate_schema: ClassVar[Mapping[str, Any]] = owned_keys("xlsx")
    suffixes = (".xlsx",)

    def __init__(self, config: Mapping[str, Any], setup: ValidatorSetup) -> None:
        super().__init__(config, setup)
        from common.validators.xlsx_checker import XlsxChecker

        rules = _section(setup).xlsx
        assert rules is not None
        self.checker = XlsxChecker(rules, setup.max_expanded_bytes)

    def check(self, path: Path, name: str) -> list[Problem]:
        return self.checker.check(path)
