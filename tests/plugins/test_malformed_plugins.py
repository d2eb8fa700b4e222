"""A plugin whose schema is not valid JSON Schema, or whose class is not a subclass of the right
base, is reported when it loads, by name and package; every other plugin still works. Through the
real CLI, with the malformed plugins registered by a fake distribution on ``PYTHONPATH``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

PLUGIN_DIR = Path(__file__).parent / "malformed"
ENTRY_POINTS = """\
[module_system.modules]
bad_schema = malformed_plugins:BadSchemaModule
not_a_module = malformed_plugins:NotAModule

[module_system.destinations]
bad_schema_dest = malformed_plugins:BadSchemaDestination
wrong_base_dest = malformed_plugins:BadSchemaModule
"""


@pytest.fixture()
def env(tmp_path: Path) -> dict[str, str]:
    info = tmp_path / "site" / "malformed_plugins-2.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: malformed_plugins\nVersion: 2.0\n")
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    paths = [str(tmp_path / "site"), str(PLUGIN_DIR), os.environ.get("PYTHONPATH", "")]
    return {**{k: v for k, v in os.environ.items() if not k.startswith("MODULE_SYSTEM_")},
            "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("module-system")), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_modules_reports_each_malformed_plugin_by_name_and_package(env: dict[str, str], tmp_path: Path) -> None:
    done = cli(env, tmp_path, "modules")
    assert done.returncode == 1, "a plugin that does not load makes `modules` exit 1"
    lines = {tuple(line.split()[:2]): line for line in done.stdout.splitlines() if line.strip()}
    expected = {
        ("source", "bad_schema"): "module 'bad_schema' from malformed_plugins 2.0 failed to load: invalid "
                                  "source_schema: 'strin' is not valid",
        ("source", "not_a_module"): "module 'not_a_module' from malformed_plugins 2.0 failed to load: NotAModule "
                                    "is not a BaseModule subclass",
        ("destination", "bad_schema_dest"): "destination 'bad_schema_dest' from malformed_plugins 2.0 failed to "
                                            "load: invalid config_schema: 'path' is not of type 'array'",
        ("destination", "wrong_base_dest"): "destination 'wrong_base_dest' from malformed_plugins 2.0 failed to "
                                            "load: BadSchemaModule is not a Destination subclass",
    }
    for key, reason in expected.items():
        assert "UNAVAILABLE: " in lines[key] and "malformed_plugins 2.0" in lines[key], lines[key]
        assert reason in lines[key], lines[key]
    for key in (("source", "s3"), ("source", "local"), ("destination", "s3"), ("destination", "local")):
        assert "UNAVAILABLE" not in lines[key], lines[key]
    assert "Traceback" not in done.stderr


def write(folder: Path, services: dict[str, object]) -> Path:
    (folder / "project_registry.yaml").write_text(yaml.safe_dump({"version": 1, "services": services}))
    (folder / "jobs.json").write_text(json.dumps({"jobs": [{"job_id": "j1", "service_id": "drop"}]}))
    return folder / "jobs.json"


@pytest.mark.parametrize(("service", "key", "reason"), [
    ({"type": "bad_schema", "source": {"path": "in"}, "destination": {"type": "local", "path": "out"}},
     "type", "module 'bad_schema' from malformed_plugins 2.0 failed to load: invalid source_schema"),
    ({"type": "not_a_module", "source": {}, "destination": {"type": "local", "path": "out"}},
     "type", "module 'not_a_module' from malformed_plugins 2.0 failed to load: NotAModule is not a BaseModule"),
    ({"type": "local", "source": {"path": "in"}, "destination": {"type": "bad_schema_dest", "path": "out"}},
     "destination.type", "destination 'bad_schema_dest' from malformed_plugins 2.0 failed to load: invalid"),
])
def test_a_registry_using_one_exits_2_naming_service_key_and_package(env: dict[str, str], tmp_path: Path,
                                                                     service: dict[str, object], key: str,
                                                                     reason: str) -> None:
    batch = write(tmp_path, {"drop": service})
    done = cli(env, tmp_path, "validate", "--batch-file", str(batch))
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert f"service 'drop': key '{key}': " in line and reason in line, line


def test_a_registry_not_using_them_runs(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.csv").write_bytes(b"id,name\n1,alpha\n")
    batch = write(tmp_path, {"drop": {"type": "local", "source": {"path": "in", "min_age_s": 0},
                                      "destination": {"type": "local", "path": "out"}}})
    done = cli(env, tmp_path, "run", "--batch-file", str(batch))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "data" / "local" / "drop" / "validated" / "a.csv").read_bytes() == b"id,name\n1,alpha\n"
