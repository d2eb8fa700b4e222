"""Helpers for end-to-end tests: a project directory with a registry and a batch, and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

#: Environment variable names whose values are secrets.
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|API_KEY", re.IGNORECASE)


def assert_no_secrets(secrets: list[str], texts: dict[str, str], files: list[Path]) -> None:
    """No secret value in any of ``texts`` or in any text file of ``files``."""
    for path in files:
        if path.is_file() and path.stat().st_size < 50_000_000:
            texts[str(path)] = path.read_text(errors="replace")
    for secret in secrets:
        leaked = [name for name, text in texts.items() if secret in text]
        assert not leaked, f"a secret from the registry appears in {leaked}"


@dataclass
class Project:
    root: Path
    env: dict[str, str]

    def write_registry(self, registry: dict[str, Any]) -> Path:
        path = self.root / "project_registry.yaml"
        path.write_text(yaml.safe_dump(registry, sort_keys=False))
        return path

    def write_ftp_registry(self, bucket: str, ftp_server: Any, folder: str, service_id: str = "sales",
                           **service: Any) -> Path:
        """A registry with one ``ftp`` service reading ``folder`` on ``ftp_server`` into ``bucket``
        (the password goes through the environment, as a real registry would take it)."""
        self.env.update({"FTP_PORT": str(ftp_server.port), "FTP_PASSWORD": ftp_server.password})
        return self.write_registry({
            "version": 1,
            "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
            "services": {service_id: {"type": "ftp", "source": {
                "host": "127.0.0.1", "port": "${FTP_PORT}", "user": ftp_server.user,
                "password": "${FTP_PASSWORD}", "path": folder}, **service}},
        })

    def write_batch(self, jobs: list[dict[str, Any]], name: str = "jobs.json") -> Path:
        path = self.root / name
        path.write_text(json.dumps({"description": "test batch", "jobs": jobs}))
        return path

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``python -m orchestrator.cli_init ARGS`` in the project directory."""
        return self._checked([sys.executable, "-m", "orchestrator.cli_init", *args], timeout)

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """``module-system ARGS`` (the console script) in the project directory."""
        return self._checked([str(Path(sys.executable).with_name("module-system")), *args], timeout)

    def _checked(self, argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run ``argv``; then no secret of the environment may appear in its output or files."""
        result = subprocess.run(argv, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout)
        assert_no_secrets(self.secrets(), {"stdout": result.stdout, "stderr": result.stderr},
                          [*self.root.glob("*.json"), *(self.root / "temp").rglob("*")])
        return result

    def secrets(self) -> list[str]:
        """Secret values handed to the registry through the environment (long enough to be unmistakable)."""
        return [v for k, v in self.env.items()
                if SECRET_NAME.search(k) and not k.startswith("AWS_") and len(v) >= 8]

    def report(self, name: str = "report.json") -> dict[str, Any]:
        return json.loads((self.root / name).read_text())


def list_keys(s3, bucket: str, prefix: str = "") -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def write_big_file(path: Path, size_mb: int) -> str:
    """``size_mb`` MiB of non-repeating bytes; returns their SHA-256."""
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as fh:
        for i in range(size_mb):
            chunk = i.to_bytes(8, "little") + block[8:]
            fh.write(chunk)
            digest.update(chunk)
    return digest.hexdigest()


#: Test-only plugins (``tests/e2e/plugins``), by registry type.
TEST_PLUGINS = {"scripted": "scripted_source:ScriptedModule", "scripted_files": "scripted_files:ScriptedFiles"}
#: Test-only destination plugins (``tests/e2e/plugins``), by ``destination.type``.
TEST_DESTINATIONS = {"jsonl_log": "jsonl_destination:JsonlLogDestination"}
PLUGIN_DIR = Path(__file__).parent / "plugins"


def install_test_plugins(site: Path) -> None:
    """A ``.dist-info`` under ``site`` registering :data:`TEST_PLUGINS` in ``module_system.modules`` and
    :data:`TEST_DESTINATIONS` in ``module_system.destinations``: with ``site`` and :data:`PLUGIN_DIR` on
    the path they load as real entry points."""
    info = site / "scripted_source-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scripted_source\nVersion: 1.0\n")
    points = "".join(f"{name} = {target}\n" for name, target in TEST_PLUGINS.items())
    destinations = "".join(f"{name} = {target}\n" for name, target in TEST_DESTINATIONS.items())
    (info / "entry_points.txt").write_text("[module_system.modules]\n" + points
                                           + "\n[module_system.destinations]\n" + destinations)
