"""Helpers for end-to-end tests: a project directory with a registry and a batch, and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Project:
    root: Path
    env: dict[str, str]

    def write_registry(self, registry: dict[str, Any]) -> Path:
        path = self.root / "project_registry.yaml"
        path.write_text(yaml.safe_dump(registry, sort_keys=False))
        return path

    def write_batch(self, jobs: list[dict[str, Any]], name: str = "jobs.json") -> Path:
        path = self.root / name
        path.write_text(json.dumps({"description": "test batch", "jobs": jobs}))
        return path

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``python -m orchestrator.cli_init ARGS`` in the project directory."""
        return subprocess.run([sys.executable, "-m", "orchestrator.cli_init", *args], cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``module-system ARGS`` (the console script) in the project directory."""
        exe = Path(sys.executable).with_name("module-system")
        return subprocess.run([str(exe), *args], cwd=self.root, env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def report(self, name: str = "report.json") -> dict[str, Any]:
        return json.loads((self.root / name).read_text())


def list_keys(s3, bucket: str, prefix: str = "") -> list[str]:  # noqa: ANN001
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))
