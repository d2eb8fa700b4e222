"""A whole run through the ``module-system`` command, for the contract suites.

:func:`run_cli` writes a registry and a batch under a folder and runs
``python -m orchestrator.cli_init`` on them in a subprocess (the same program as
``module-system run``), so a plugin is exercised as a user runs it: found through its entry
point, its keys checked by the loader, its files validated and landed by the framework.
:func:`registered_type` finds the registry ``type`` a class is installed under.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import jsonschema
import yaml

__all__ = ["CliRun", "check_closed_schema", "registered_type", "run_cli"]


@dataclass(frozen=True)
class CliRun:
    """What one ``module-system run`` did."""

    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any] | None
    """The run report (``--report``), or None when the run did not write one (a config error)."""


def registered_type(cls: type[Any], group: str) -> str:
    """The entry point name (the registry ``type``) under which ``cls`` is installed in ``group``.

    Fails the test with what to do when it is not installed: a run finds plugins only through
    their entry points (``pip install -e .`` registers them).
    """
    import pytest

    target = f"{cls.__module__}:{cls.__qualname__}"
    for ep in entry_points(group=group):
        if ep.value.replace(" ", "") == target:
            return ep.name
    pytest.fail(f"{target} is not registered under the entry point group {group!r}: declare it in "
                f"pyproject.toml ([project.entry-points.\"{group}\"]) and install the package (pip install -e .)")


def run_cli(folder: Path, registry: dict[str, Any], jobs: list[dict[str, Any]], timeout: float = 300,
            extra_args: tuple[str, ...] = ()) -> CliRun:
    """Write ``registry`` (YAML) and a batch of ``jobs`` under ``folder`` and run them with
    ``python -m orchestrator.cli_init``; the state dir and the report stay under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    registry_path = folder / "project_registry.yaml"
    registry_path.write_text(yaml.safe_dump(registry, sort_keys=False))
    batch = folder / "jobs.json"
    batch.write_text(json.dumps({"description": "contract run", "jobs": jobs}))
    report = folder / "report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODULE_SYSTEM_")}
    argv = [sys.executable, "-m", "orchestrator.cli_init", "--batch-file", str(batch), "--registry",
            str(registry_path), "--report", str(report), "--state-dir", str(folder / "state"),
            "--log-format", "json", *extra_args]
    done = subprocess.run(argv, check=False, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout)
    return CliRun(done.returncode, done.stdout, done.stderr,
                  json.loads(report.read_text()) if report.exists() else None)


def check_closed_schema(schema: Mapping[str, Any], attribute: str) -> None:
    """Assert that a plugin's ``attribute`` (``source_schema``, ``config_schema``) is a closed
    draft 2020-12 JSON Schema object (warnings as errors) whose defaults match their own schemas."""
    assert schema.get("type") == "object", f"{attribute} must have type 'object'"
    assert schema.get("additionalProperties") is False, \
        f"{attribute} must set additionalProperties: false, so that a misspelt key is an error"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jsonschema.Draft202012Validator.check_schema(schema)
        for name, prop in schema.get("properties", {}).items():
            if "default" in prop:
                errors = list(jsonschema.Draft202012Validator(prop).iter_errors(prop["default"]))
                assert not errors, f"default of {name!r} does not match its own schema: {errors[0].message}"
