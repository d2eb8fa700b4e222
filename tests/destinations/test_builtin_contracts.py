"""The built-in file destinations run the contract suite that plugin destinations subclass
(:class:`module_system.contract.DestinationContract`): ``s3`` against moto over HTTP, ``local``
against a folder."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from destinations.local import LocalDestination
from destinations.s3 import S3Destination
from module_system.contract import DestinationContract
from module_system.testing import TEST_AWS_KEY, TEST_AWS_SECRET

_buckets = itertools.count()


class TestS3DestinationContract(DestinationContract):
    @pytest.fixture(autouse=True)
    def _store(self, s3_server, s3) -> None:  # noqa: ANN001
        self.url, self.s3 = s3_server.url, s3
        self.bucket = f"contract-{next(_buckets)}"
        s3.create_bucket(Bucket=self.bucket)

    @pytest.fixture
    def destination_cls(self) -> type[S3Destination]:
        return S3Destination

    def make_config(self, tmp_path: Path) -> dict[str, Any]:
        return {"bucket": self.bucket, "endpoint_url": self.url, "access_key_id": TEST_AWS_KEY,
                "secret_access_key": TEST_AWS_SECRET, "multipart_threshold_mb": 5, "multipart_chunksize_mb": 5}

    def make_bad_config(self, tmp_path: Path) -> dict[str, Any]:
        return {**self.make_config(tmp_path), "bucket": "contract-no-such-bucket"}

    def read_key(self, config: Mapping[str, Any], key: str) -> bytes | None:
        try:
            body: bytes = self.s3.get_object(Bucket=config["bucket"], Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return body


class TestLocalDestinationContract(DestinationContract):
    @pytest.fixture
    def destination_cls(self) -> type[LocalDestination]:
        return LocalDestination

    def make_config(self, tmp_path: Path) -> dict[str, Any]:
        return {"path": str(tmp_path / "landing")}

    def make_bad_config(self, tmp_path: Path) -> dict[str, Any]:
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        return {"path": str(blocker / "landing")}

    def read_key(self, config: Mapping[str, Any], key: str) -> bytes | None:
        path = Path(config["path"]) / key
        return path.read_bytes() if path.is_file() else None
