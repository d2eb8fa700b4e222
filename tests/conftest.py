"""Shared fixtures: real servers on 127.0.0.1 (moto over HTTP, pyftpdlib), once per session."""

from __future__ import annotations

import itertools
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
