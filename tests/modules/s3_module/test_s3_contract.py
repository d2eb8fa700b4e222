"""S3Module against the module contract suite, on the session moto server."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from module_system.contract import ModuleContract
from module_system.testing import TEST_AWS_KEY, TEST_AWS_SECRET, S3Server
from modules.s3_module.main import S3Module

PREFIX = "contract/drop/"


class TestS3Contract(ModuleContract):
    @pytest.fixture(autouse=True)
    def _server(self, s3_server: S3Server) -> None:
        self.server = s3_server
        self.admin = s3_server.client()

    @pytest.fixture
    def module_cls(self) -> type[S3Module]:
        return S3Module

    def _source(self, bucket: str) -> dict[str, Any]:
        return {"bucket": bucket, "prefix": PREFIX, "endpoint_url": self.server.url,
                "access_key_id": TEST_AWS_KEY, "secret_access_key": TEST_AWS_SECRET}

    def make_source(self, tmp_path: Path, files: dict[str, bytes]) -> dict[str, Any]:
        bucket = f"contract-{uuid.uuid4().hex[:16]}"
        self.admin.create_bucket(Bucket=bucket)
        self.admin.put_object(Bucket=bucket, Key="outside-the-prefix.txt", Body=b"not fetched")
        for name, data in files.items():
            self.admin.put_object(Bucket=bucket, Key=PREFIX + name, Body=data)
        return self._source(bucket)

    def make_bad_source(self, tmp_path: Path) -> dict[str, Any]:
        return self._source(f"missing-{uuid.uuid4().hex[:16]}")
