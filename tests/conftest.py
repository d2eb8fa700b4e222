"""Shared fixtures: real servers on 127.0.0.1 (moto over HTTP, pyftpdlib), once per session."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from module_system.testing import FtpServer, S3Server

_bucket_ids = itertools.count()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture()
def s3(s3_server: S3Server):  # noqa: ANN201 - a boto3 client
    return s3_server.client()


@pytest.fixture()
def bucket(s3) -> str:  # noqa: ANN001
    """A fresh, empty bucket for one test."""
    name = f"test-bucket-{next(_bucket_ids)}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ftp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ftp-root")


@pytest.fixture(scope="session")
def ftp_server(ftp_root: Path) -> Iterator[FtpServer]:
    with FtpServer(ftp_root) as server:
        yield server


@pytest.fixture()
def ftp_dir(ftp_root: Path, request: pytest.FixtureRequest) -> Path:
    """A fresh directory on the session FTP server for one test (relative path: its name)."""
    path = ftp_root / request.node.name.replace("[", "_").replace("]", "_")
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster for the session (tests/servers/postgres.py): its URL, with a password."""
    from tests.servers.postgres import find_bin_dir, postgres_cluster

    bin_dir = find_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL's server binaries are missing: .ci/run installs the postgresql package")
        pytest.skip("PostgreSQL's server binaries are not installed (apt-get install postgresql)")
    with postgres_cluster(bin_dir) as url:
        yield url
