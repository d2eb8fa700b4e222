"""End-to-end fixtures: a project directory whose CLI runs talk to the session's servers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from module_system.testing import TEST_AWS_KEY, TEST_AWS_SECRET
from tests.e2e.helpers import PLUGIN_DIR, Project, install_test_plugins


@pytest.fixture()
def project(tmp_path: Path, s3_server) -> Project:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODULE_SYSTEM_"))}
    env.update({
        "AWS_ACCESS_KEY_ID": TEST_AWS_KEY, "AWS_SECRET_ACCESS_KEY": TEST_AWS_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1", "S3_URL": s3_server.url, "LOG_LEVEL": "DEBUG",
    })
    return Project(tmp_path, env)




@pytest.fixture()
def scripted(tmp_path: Path, project: Project) -> None:
    """The test plugins of ``tests/e2e/plugins`` (``type: scripted``, a raw module, and
    ``type: scripted_files``, a file source) installed for the CLI as a real distribution."""
    site = tmp_path / "site"
    install_test_plugins(site)
    project.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(site), str(PLUGIN_DIR), os.environ.get("PYTHONPATH")) if p)
