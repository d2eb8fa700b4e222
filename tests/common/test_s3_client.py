"""Our S3 clients: same endpoints as a plain boto3 client, and named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3.session
import pytest
from botocore.config import Config

from common.s3_client import USER_AGENT, new_s3_client
from common.s3_uploader import S3Uploader
from tests.servers.s3_proxy import S3Proxy
from tests.common.test_s3_uploader import RETRY, destination, local_file

CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


class _Sent(Exception):
    """Raised by a ``before-send`` handler: the request was built and is not sent."""

    def __init__(self, url: str, user_agent: str) -> None:
        super().__init__(url)
        self.url, self.user_agent = url, user_agent


def _stop_before_send(request: Any, **_: Any) -> None:
    raise _Sent(request.url, request.headers.get("User-Agent", b"").decode())


def built_request(client: Any, operation: str, **params: Any) -> _Sent:
    """The URL and User-Agent botocore builds for ``operation``; nothing leaves the process."""
    with pytest.raises(_Sent) as sent:
        getattr(client, operation)(**params)
    return sent.value


def plain_and_ours(config: Config | None = None, **client_kwargs: Any) -> tuple[Any, Any]:
    """A plain boto3 client and one of ours, alike otherwise; neither sends anything."""
    config = Config(retries={"total_max_attempts": 1}).merge(config or Config())
    plain = boto3.session.Session().client("s3", config=config, **CREDENTIALS, **client_kwargs)
    ours = new_s3_client(config, **CREDENTIALS, **client_kwargs)
    for client in (plain, ours):
        client.meta.events.register("before-send.s3", _stop_before_send)
    return plain, ours


OPERATIONS = [
    ("put_object", {"Key": "in/a b+c.csv", "Body": b"x"}),
    ("get_object", {"Key": "in/a.csv"}),
    ("head_object", {"Key": "deep/er/ä.json"}),
    ("list_objects_v2", {"Prefix": "in/", "Delimiter": "/"}),
    ("copy_object", {"Key": "to/b.csv", "CopySource": {"Bucket": "other-bucket", "Key": "from/a.csv"}}),
    ("create_multipart_upload", {"Key": "big.csv"}),
    ("upload_part", {"Key": "big.csv", "UploadId": "u1", "PartNumber": 2, "Body": b"y"}),
    ("delete_object", {"Key": "in/a.csv"}),
]
BUCKETS = ["data-bucket", "dotted.bucket.name", "arn:aws:s3:us-west-2:123456789012:accesspoint/ingest"]
SETUPS = [
    {"region_name": "eu-west-1"},
    {"region_name": "us-east-1", "config": Config(s3={"addressing_style": "path"})},
    {"region_name": "eu-central-1", "config": Config(use_dualstack_endpoint=True)},
    {"region_name": "us-east-1", "endpoint_url": "http://127.0.0.1:9000"},
]


@pytest.mark.parametrize("setup", SETUPS, ids=["aws-virtual", "aws-path", "dualstack", "custom-endpoint"])
def test_every_operation_goes_where_a_plain_client_sends_it(setup: dict[str, Any]) -> None:
    plain, ours = plain_and_ours(**setup)
    compared = 0
    for bucket in BUCKETS:
        if bucket.startswith("arn:") and "endpoint_url" in setup:
            continue  # access points need AWS endpoints
        for operation, params in OPERATIONS:
            expected = built_request(plain, operation, Bucket=bucket, **params)
            got = built_request(ours, operation, Bucket=bucket, **params)
            assert got.url == expected.url, (bucket, operation)
            compared += 1
    assert compared >= 16


def test_a_user_agent_of_our_own_unless_the_config_names_one() -> None:
    _, ours = plain_and_ours(region_name="eu-west-1")
    sent = built_request(ours, "head_object", Bucket="b", Key="k")
    assert sent.user_agent.startswith(USER_AGENT) and USER_AGENT.startswith("module_system/")
    named = new_s3_client(Config(user_agent="nightly-loader/2"), region_name="eu-west-1", **CREDENTIALS)
    named.meta.events.register("before-send.s3", _stop_before_send)
    assert built_request(named, "head_object", Bucket="b", Key="k").user_agent.startswith("nightly-loader/2")


def test_the_uploader_names_itself_in_every_request(s3_server, bucket: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with S3Proxy(s3_server.url) as proxy:
        uploader = S3Uploader(destination(proxy.url, bucket), timeout_s=10, pool_size=2)
        for number in range(3):
            path, digest = local_file(tmp_path, f"row {number}\n".encode(), f"f{number}.txt")
            assert uploader.put_file(bucket, f"in/{number}.txt", path, path.stat().st_size, digest,
                                     RETRY).status == "uploaded"
        uploader.close()
    operations = {r.operation for r in proxy.requests}
    assert {"ListObjects", "PutObject"} <= operations  # listing, uploads
    assert all(r.user_agent and r.user_agent.startswith(USER_AGENT) for r in proxy.requests)
