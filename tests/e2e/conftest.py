"""End-to-end fixtures: a project directory whose CLI runs talk to the session's servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from module_system.testing import TEST_AWS_KEY, TEST_AWS_SECRET
from tests.e2e.helpers import Project


@pytest.fixture()
def project(tmp_path: Path, s3_server) -> Project:  # noqa: ANN001
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODULE_SYSTEM_"))}
    env.update({
        "AWS_ACCESS_KEY_ID": TEST_AWS_KEY, "AWS_SECRET_ACCESS_KEY": TEST_AWS_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1", "S3_URL": s3_server.url, "LOG_LEVEL": "DEBUG",
    })
    return Project(tmp_path, env)




#: Test-only plugins (``tests/e2e/plugins``), by registry type.
TEST_PLUGINS = {"scripted": "scripted_source:ScriptedModule", "scripted_files": "scripted_files:ScriptedFiles"}


@pytest.fixture()
def scripted(tmp_path: Path, project: Project) -> None:
    """The test plugins of ``tests/e2e/plugins`` (``type: scripted``, a raw module, and
    ``type: scripted_files``, a file source) installed for the CLI as a real distribution."""
    site = tmp_path / "site"
    info = site / "scripted_source-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: scripted_source\nVersion: 1.0\n")
    points = "".join(f"{name} = {target}\n" for name, target in TEST_PLUGINS.items())
    (info / "entry_points.txt").write_text("[module_system.modules]\n" + points)
    project.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(site), str(Path(__file__).parent / "plugins"), os.environ.get("PYTHONPATH")) if p)
