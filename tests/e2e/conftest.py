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


