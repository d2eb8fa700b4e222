"""Plugins through the real CLI: listing, a plugin type run end to end, and a broken plugin.

Every test runs ``module-system`` (or ``python -m orchestrator.cli_init``) in a
subprocess against the session moto server. The broken plugin is a fake
distribution (a ``.dist-info`` folder whose entry point names a package that does not
exist) put on the subprocess's ``PYTHONPATH``.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from module_system.testing import TEST_AWS_KEY, TEST_AWS_SECRET, S3Server
from tests.e2e.helpers import Project, list_keys

GOOD_CSV = b"id,name\n1,alpha\n2,beta\n"
BAD_CSV = b"id,name\nx,alpha\n"
SERVICE = "local_drop"


@pytest.fixture()
def project(tmp_path: Path, s3_server: S3Server) -> Project:
    """A project folder whose CLI runs upload to the session moto server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODULE_SYSTEM_"))}
    env.update({
        "AWS_ACCESS_KEY_ID": TEST_AWS_KEY, "AWS_SECRET_ACCESS_KEY": TEST_AWS_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1", "S3_URL": s3_server.url,
    })
    root = tmp_path / "project"
    root.mkdir()
    return Project(root, env)


@pytest.fixture()
def drop(tmp_path: Path) -> Path:
    """A local folder for the ``localdir`` service: two valid CSVs, one invalid, one excluded."""
    folder = tmp_path / "drop"
    (folder / "sub").mkdir(parents=True)
    (folder / "good.csv").write_bytes(GOOD_CSV)
    (folder / "sub" / "good2.csv").write_bytes(GOOD_CSV.replace(b"alpha", b"gamma"))
    (folder / "bad.csv").write_bytes(BAD_CSV)
    (folder / "notes.txt").write_bytes(b"not included")
    return folder


@pytest.fixture()
def broken_plugin(tmp_path: Path, project: Project) -> Path:
    """A distribution ``broken_plugin 1.0`` whose ``broken`` module cannot be imported, on PYTHONPATH."""
    site = tmp_path / "fake-site"
    info = site / "broken_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken_plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[module_system.modules]\nbroken = no_such_package.mod:Thing\n")
    project.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return site


def localdir_service(path: Path, **source: Any) -> dict[str, Any]:
    return {
        "type": "localdir",
        "source": {"path": str(path), "include": ["*.csv"], **source},
        "validate": {"csv": {"columns": ["id", "name"], "types": {"id": "int"}}},
    }


def registry(bucket: str, services: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 10},
        "services": services,
    }


def module_lines(stdout: str) -> dict[str, str]:
    """``module-system modules`` output: a source module's name, or ``destination:<name>`` -> its line."""
    lines = {}
    for line in stdout.splitlines():
        if line.strip():
            kind, name = line.split()[:2]
            lines[name if kind == "source" else f"{kind}:{name}"] = line
    return lines


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------- listing


def test_modules_lists_builtins_and_the_example_plugin(project: Project) -> None:
    result = project.cli("modules")
    assert result.returncode in (0, 1), result.stderr  # 1 while web/api are not installed yet
    lines = module_lines(result.stdout)
    own = f"module_system {version('module_system')}"
    assert own in lines["s3"] and "modules.s3_module.main:S3Module" in lines["s3"]
    assert own in lines["ftp"] and "modules.ftp_module.main:FtpModule" in lines["ftp"]
    assert "module-system-example-plugin 0.1.0" in lines["localdir"]
    assert "ms_example_plugin.localdir:LocalDirModule" in lines["localdir"]
    for name in ("s3", "ftp", "localdir"):
        assert "UNAVAILABLE" not in lines[name], lines[name]
    for name, target in (("s3", "destinations.s3:S3Destination"), ("local", "destinations.local:LocalDestination"),
                         ("sql", "destinations.sql:SqlDestination")):
        line = lines[f"destination:{name}"]
        assert own in line and target in line and "UNAVAILABLE" not in line, line


# ---------------------------------------------------------------------- a plugin type, end to end


def test_localdir_service_runs_end_to_end(project: Project, s3: Any, bucket: str, drop: Path) -> None:
    project.write_registry(registry(bucket, {SERVICE: localdir_service(drop)}))
    batch = project.write_batch([{"job_id": "local_1", "service_id": SERVICE}])
    result = project.cli("run", "--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 1, result.stderr  # one file rejected

    prefix = f"data/localdir/{SERVICE}"
    assert list_keys(s3, bucket) == sorted([
        f"_manifests/{SERVICE}/local_1.json",
        f"{prefix}/rejected/bad.csv",
        f"{prefix}/rejected/bad.csv.errors.json",
        f"{prefix}/validated/good.csv",
        f"{prefix}/validated/sub/good2.csv",
    ])
    good = s3.get_object(Bucket=bucket, Key=f"{prefix}/validated/good.csv")
    assert good["Body"].read() == GOOD_CSV and good["Metadata"]["sha256"] == sha(GOOD_CSV)

    job = project.report()["jobs"][0]
    assert job["status"] == "succeeded" and job["source_used"] == "primary"
    assert job["files"] == {"uploaded": 2, "skipped_same": 0, "skipped_unchanged": 0, "rejected": 1, "failed": 0}
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"_manifests/{SERVICE}/local_1.json")["Body"].read())
    assert manifest["module"] == "localdir"
    uris = sorted(f["source_uri"] for f in manifest["files"])
    assert uris == sorted((drop / n).as_uri() for n in ("bad.csv", "good.csv", "sub/good2.csv"))


def test_wrong_key_in_a_localdir_service_exits_2(project: Project, s3: Any, bucket: str, drop: Path) -> None:
    project.write_registry(registry(bucket, {SERVICE: localdir_service(drop, recursve=True)}))
    batch = project.write_batch([{"job_id": "local_1", "service_id": SERVICE}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert f"service '{SERVICE}'" in line and "key 'source.recursve'" in line, line
    assert list_keys(s3, bucket) == []


# ---------------------------------------------------------------------- a broken plugin


def test_broken_plugin_is_listed_with_its_reason(project: Project, broken_plugin: Path) -> None:
    result = project.cli("modules")
    assert result.returncode == 1, "a module that does not load makes `modules` exit 1"
    lines = module_lines(result.stdout)
    broken = lines["broken"]
    assert "broken_plugin 1.0" in broken and "no_such_package.mod:Thing" in broken
    assert "UNAVAILABLE" in broken and "No module named 'no_such_package'" in broken
    for name in ("s3", "ftp", "localdir"):
        assert "UNAVAILABLE" not in lines[name], lines[name]


def test_registry_using_a_broken_plugin_exits_2(project: Project, s3: Any, bucket: str, drop: Path,
                                                broken_plugin: Path) -> None:
    services = {SERVICE: localdir_service(drop), "uses_broken": {"type": "broken", "source": {"x": 1}}}
    project.write_registry(registry(bucket, services))
    batch = project.write_batch([{"job_id": "local_1", "service_id": SERVICE}])
    result = project.cli("run", "--batch-file", str(batch))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "service 'uses_broken'" in line and "key 'type'" in line, line
    assert "broken_plugin 1.0" in line and "No module named 'no_such_package'" in line, line
    assert list_keys(s3, bucket) == [], "nothing runs"


def test_registry_not_using_the_broken_plugin_runs(project: Project, s3: Any, bucket: str, drop: Path,
                                                   broken_plugin: Path) -> None:
    (drop / "bad.csv").unlink()
    project.write_registry(registry(bucket, {SERVICE: localdir_service(drop)}))
    batch = project.write_batch([{"job_id": "local_1", "service_id": SERVICE}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 0, result.stderr
    assert list_keys(s3, bucket, "data/") == [f"data/localdir/{SERVICE}/validated/good.csv",
                                              f"data/localdir/{SERVICE}/validated/sub/good2.csv"]
