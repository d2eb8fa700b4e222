"""Test-only validator plugins, installed for a CLI run as a real distribution by
``tests/e2e/test_validator_plugins.py`` (a ``.dist-info`` registering them in
``module_system.validators``).

* ``tsv``: owns ``validate.tsv`` (``fields``: how many tab-separated fields each line has)
  and checks ``.tsv`` files line by line;
* ``broken``: a ``validate_schema`` that is not a valid JSON Schema;
* ``stray``: not a Validator subclass.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from module_system import ConfigError, Problem, Validator, ValidatorSetup, capped


class TsvValidator(Validator):
    validate_schema: ClassVar[Mapping[str, Any]] = {
        "type": "object",
        "properties": {"tsv": {
            "type": "object", "additionalProperties": False, "required": ["fields"],
            "properties": {"fields": {"type": "integer", "minimum": 1},
                           "header": {"type": "boolean", "default": True}}}},
    }
    suffixes = (".tsv",)

    def __init__(self, config: Mapping[str, Any], setup: ValidatorSetup) -> None:
        super().__init__(config, setup)
        self.fields = config["tsv"]["fields"]
        self.header = config["tsv"]["header"]
        if self.fields > 1000:
            raise ConfigError("validate.tsv.fields: more than 1000 fields is not a TSV we read",
                              key="validate.tsv.fields")

    def check(self, path: Path, name: str) -> list[Problem]:
        def problems() -> Any:
            with open(path, encoding="utf-8", errors="replace") as fh:
                for number, line in enumerate(fh, start=1):
                    count = len(line.rstrip("\n").split("\t"))
                    if line.strip() and count != self.fields:
                        yield Problem(f"{count} fields, expected {self.fields}", f"line {number}")

        return capped(problems())


class BrokenSchema(Validator):
    validate_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "properties": {"broken": {"type": "no-such-type"}}}

    def check(self, path: Path, name: str) -> list[Problem]:
        return []


class NotAValidator:
    validate_schema: ClassVar[Mapping[str, Any]] = {"type": "object", "properties": {"stray": {}}}
