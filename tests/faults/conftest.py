"""Fault-injection fixtures: a CLI project on the session's moto S3 and a versioned bucket.

Versioning makes S3 itself the witness for "nothing landed twice": every PUT of a key
adds a version, so a key with one version was written once.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from module_system.testing import TEST_AWS_KEY, TEST_AWS_SECRET
from tests.e2e.helpers import Project


@pytest.fixture()
def project(tmp_path: Path, s3_server) -> Project:  # noqa: ANN001
    """A project directory whose CLI runs talk to the session's moto server."""
    root = tmp_path / "project"
    root.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODULE_SYSTEM_"))}
    env.update({
        "AWS_ACCESS_KEY_ID": TEST_AWS_KEY, "AWS_SECRET_ACCESS_KEY": TEST_AWS_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1", "S3_URL": s3_server.url, "LOG_LEVEL": "DEBUG",
    })
    return Project(root, env)


@pytest.fixture()
def versioned_bucket(s3, bucket: str) -> str:  # noqa: ANN001
    """The test's fresh bucket with versioning on."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


def versions_per_key(s3, bucket: str, prefix: str = "") -> Counter[str]:  # noqa: ANN001
    """How many versions each key under ``prefix`` has (one per PUT)."""
    counts: Counter[str] = Counter()
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        counts.update(v["Key"] for v in page.get("Versions", []))
    return counts


def print_figures(name: str, **figures: object) -> None:
    """One line of reliability figures for the README (visible with ``pytest -s``)."""
    print(f"\nFAULT FIGURES {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
