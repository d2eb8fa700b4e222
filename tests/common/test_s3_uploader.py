"""The uploader against moto's server over HTTP: sha256 metadata, skip-same, parts, checksum modes."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest

from common.config_model import DestinationConfig
from common.exceptions import UploadError
from common.retry import RetryPolicy
from common.s3_uploader import S3Uploader, UploaderPool

RETRY = RetryPolicy(attempts=2, backoff_s=0.01)


def destination(url: str, bucket: str, **changes: object) -> DestinationConfig:
    base = DestinationConfig(bucket=bucket, prefix="p/", rejected_prefix="r/", endpoint_url=url, region="us-east-1",
                             checksum="sha256", access_key_id=None, secret_access_key=None,
                             multipart_threshold_mb=64, multipart_chunksize_mb=8, max_concurrency=4)
    return replace(base, **changes)  # type: ignore[arg-type]


def local_file(tmp_path: Path, data: bytes, name: str = "f.bin") -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.mark.parametrize("mode", ["sha256", "crc32", "when_required"])
def test_upload_then_skip_same_then_replace(s3_server, s3, bucket: str, tmp_path: Path, mode: str) -> None:  # noqa: ANN001
    uploader = S3Uploader(destination(s3_server.url, bucket, checksum=mode), timeout_s=10, pool_size=4)
    path, digest = local_file(tmp_path, b"hello world\n")
    first = uploader.put_file(bucket, "k/a.txt", path, 12, digest, RETRY)
    assert first.status == "uploaded"
    head = s3.head_object(Bucket=bucket, Key="k/a.txt")
    assert head["Metadata"]["sha256"] == digest and head["ContentLength"] == 12
    assert uploader.put_file(bucket, "k/a.txt", path, 12, digest, RETRY).status == "skipped_same"
    path2, digest2 = local_file(tmp_path, b"hello there\n", "g.bin")
    assert uploader.put_file(bucket, "k/a.txt", path2, 12, digest2, RETRY).status == "uploaded"
    assert s3.get_object(Bucket=bucket, Key="k/a.txt")["Body"].read() == b"hello there\n"
    uploader.close()


def test_multipart_upload_carries_sha256(s3_server, s3, bucket: str, tmp_path: Path) -> None:  # noqa: ANN001
    uploader = S3Uploader(destination(s3_server.url, bucket, multipart_threshold_mb=5, multipart_chunksize_mb=5),
                          timeout_s=30, pool_size=4)
    data = os.urandom(12 << 20)
    path, digest = local_file(tmp_path, data)
    assert uploader.put_file(bucket, "big.bin", path, len(data), digest, RETRY).status == "uploaded"
    obj = s3.get_object(Bucket=bucket, Key="big.bin")
    assert obj["Metadata"]["sha256"] == digest
    assert "-" in obj["ETag"], "uploaded in parts"
    assert hashlib.sha256(obj["Body"].read()).hexdigest() == digest
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert uploads == []
    uploader.close()


def test_put_json_is_idempotent(s3_server, s3, bucket: str) -> None:  # noqa: ANN001
    uploader = S3Uploader(destination(s3_server.url, bucket), timeout_s=10, pool_size=2)
    assert uploader.put_json(bucket, "e.json", {"a": 1}, RETRY) == "uploaded"
    assert uploader.put_json(bucket, "e.json", {"a": 1}, RETRY) == "skipped_same"
    assert uploader.put_json(bucket, "e.json", {"a": 2}, RETRY) == "uploaded"
    assert "sha256" in s3.head_object(Bucket=bucket, Key="e.json")["Metadata"]
    uploader.close()


def test_missing_bucket_is_not_transient(s3_server, tmp_path: Path) -> None:  # noqa: ANN001
    uploader = S3Uploader(destination(s3_server.url, "no-such-bucket-x"), timeout_s=10, pool_size=2)
    path, digest = local_file(tmp_path, b"x")
    with pytest.raises(UploadError) as info:
        uploader.put_file("no-such-bucket-x", "x", path, 1, digest, RETRY)
    assert "NoSuchBucket" in str(info.value) or "404" in str(info.value)
    uploader.close()


def test_pool_shares_one_uploader_per_destination(s3_server, bucket: str) -> None:  # noqa: ANN001
    pool = UploaderPool(pool_size=4)
    a = pool.get(destination(s3_server.url, bucket), 10)
    b = pool.get(destination(s3_server.url, "other-bucket"), 10)
    c = pool.get(destination(s3_server.url, bucket, checksum="crc32"), 10)
    assert a is b and a is not c
    pool.close()


def test_destination_tls_verification_switch_warns(s3_server, bucket: str) -> None:  # noqa: ANN001
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        on = S3Uploader(destination(s3_server.url, bucket), timeout_s=10, pool_size=2)
        off = S3Uploader(destination(s3_server.url, bucket, verify_tls=False), timeout_s=10, pool_size=2)
    assert on.client._endpoint.http_session._verify is not False  # noqa: SLF001
    assert off.client._endpoint.http_session._verify is False  # noqa: SLF001
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["tls_verification_disabled"]
    on.close()
    off.close()
