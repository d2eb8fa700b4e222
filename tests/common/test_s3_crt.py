"""Small PUTs through the AWS Common Runtime (common/s3_crt.py), against moto's server over
HTTP with the recording proxy between: what reaches the store, keys, errors, retries, stalls."""

from __future__ import annotations

import base64
import hashlib
import threading
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from common.exceptions import TransferStopped, TransientUploadError, UploadError
from common.retry import RetryPolicy
from common.s3_client import USER_AGENT
from common.s3_crt import CRT_MAX_BODY, CrtS3, crt_s3
from common.s3_uploader import S3Uploader
from module_system.testing import s3_client
from tests.common.test_s3_uploader import RETRY, destination, local_file
from tests.servers.s3_proxy import FaultRule, ProxyRequest, S3Proxy


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def first_put(kind: str) -> FaultRule:
    """A rule faulting the first PutObject only, with ``kind``."""
    seen = []

    def rule(request: ProxyRequest) -> str | None:
        if request.operation != "PutObject" or seen:
            return None
        seen.append(request)
        return kind

    return rule


def _by_runtime(request: object) -> bool:
    """botocore stamps every request with ``amz-sdk-invocation-id``; the runtime does not."""
    return "amz-sdk-invocation-id" not in request.headers  # type: ignore[attr-defined]


def test_a_small_file_goes_through_the_runtime_a_large_one_through_botocore(s3_server, s3, bucket: str,
                                                                             tmp_path: Path) -> None:
    with S3Proxy(s3_server.url) as proxy:
        uploader = S3Uploader(destination(proxy.url, bucket), timeout_s=10, pool_size=2)
        small, small_digest = local_file(tmp_path, b"id,name\n1,x\n", "small.csv")
        big_data = b"y" * (CRT_MAX_BODY + 1)
        big, big_digest = local_file(tmp_path, big_data, "big.bin")
        assert uploader.put_file(bucket, "in/small.csv", small, small.stat().st_size, small_digest, RETRY,
                                 content_type="text/csv").status == "uploaded"
        assert uploader.put_file(bucket, "in/big.bin", big, len(big_data), big_digest, RETRY).status == "uploaded"
        uploader.close()
    small_put, big_put = proxy.of("PutObject")
    assert _by_runtime(small_put) and not _by_runtime(big_put)
    assert (small_put.user_agent or "").startswith(USER_AGENT)
    assert small_put.headers["x-amz-checksum-sha256"] == base64.b64encode(bytes.fromhex(small_digest)).decode()
    assert small_put.headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"  # the signed checksum covers the body
    assert len(proxy.requests) == 3  # the folder listed once, then one PUT per file: no HEAD after a PUT
    head = s3.head_object(Bucket=bucket, Key="in/small.csv")
    assert head["Metadata"]["sha256"] == small_digest and head["ContentType"] == "text/csv"
    assert s3.get_object(Bucket=bucket, Key="in/small.csv")["Body"].read() == b"id,name\n1,x\n"


@pytest.mark.parametrize("mode", ["crc32", "when_required"])
def test_without_a_sha256_checksum_the_body_digest_is_signed(s3_server, s3, bucket: str, tmp_path: Path,
                                                             mode: str) -> None:
    with S3Proxy(s3_server.url) as proxy:
        uploader = S3Uploader(destination(proxy.url, bucket, checksum=mode), timeout_s=10, pool_size=2)
        path, digest = local_file(tmp_path, b"a,b\n1,2\n")
        uploader.put_file(bucket, "k.csv", path, 8, digest, RETRY)
        uploader.close()
    (put,) = proxy.of("PutObject")
    assert _by_runtime(put) and put.headers["x-amz-content-sha256"] == digest
    assert ("x-amz-checksum-crc32" in put.headers) == (mode == "crc32")
    assert s3.get_object(Bucket=bucket, Key="k.csv")["Body"].read() == b"a,b\n1,2\n"


def test_keys_are_encoded_as_botocore_encodes_them(s3_server, s3, bucket: str, tmp_path: Path) -> None:
    uploader = S3Uploader(destination(s3_server.url, bucket), timeout_s=10, pool_size=2)
    keys = ["a b/c+d.csv", "é/ü ñ.csv", "x/~tilde/%25.csv", "q?&=#.csv", "deep/er/still/f.csv"]
    for i, key in enumerate(keys):
        path, digest = local_file(tmp_path, f"n\n{i}\n".encode(), f"f{i}")
        assert uploader.put_file(bucket, key, path, path.stat().st_size, digest, RETRY).status == "uploaded"
    uploader.close()
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert listed == sorted(keys)
    assert s3.get_object(Bucket=bucket, Key="é/ü ñ.csv")["Body"].read() == b"n\n1\n"


def test_answers_of_the_store_are_retried_by_our_policy_and_counted(s3_server, s3, bucket: str,
                                                                    tmp_path: Path) -> None:
    with S3Proxy(s3_server.url) as proxy:
        uploader = S3Uploader(destination(proxy.url, bucket), timeout_s=10, pool_size=2)
        path, digest = local_file(tmp_path, b"retry me\n")
        retried: list[tuple[str, str]] = []
        policy = RetryPolicy(attempts=3, backoff_s=0.01, on_retry=lambda what, n, why: retried.append((what, why)))
        proxy.fault = first_put("503")  # the runtime itself must not retry it: our policy does
        assert uploader.put_file(bucket, "r.txt", path, 9, digest, policy).status == "uploaded"
        uploader.close()
    puts = proxy.of("PutObject")
    assert len(puts) == 2 and all(_by_runtime(p) for p in puts) and [w for w, _ in retried] == ["put r.txt"]
    assert "SlowDown" in retried[0][1]  # the store's code, as botocore reports it
    assert s3.get_object(Bucket=bucket, Key="r.txt")["Body"].read() == b"retry me\n"


def test_a_refusal_is_the_store_code_and_not_retried(s3_server, bucket: str, tmp_path: Path) -> None:
    uploader = S3Uploader(destination(s3_server.url, "no-such-bucket-here"), timeout_s=10, pool_size=2)
    path, digest = local_file(tmp_path, b"x\n")
    retried: list[str] = []
    policy = RetryPolicy(attempts=3, backoff_s=0.01, on_retry=lambda what, exc, n: retried.append(what))
    with pytest.raises(UploadError) as failed:
        uploader.put_file("no-such-bucket-here", "k", path, 2, digest, policy, skip_same=False)
    assert "NoSuchBucket" in str(failed.value) and not isinstance(failed.value, TransientUploadError)
    assert retried == []
    uploader.close()


def test_a_put_without_progress_times_out_and_the_retry_lands_it(s3_server, s3, bucket: str,
                                                                 tmp_path: Path) -> None:
    with S3Proxy(s3_server.url) as proxy:
        uploader = S3Uploader(destination(proxy.url, bucket), timeout_s=1.5, pool_size=2)
        path, digest = local_file(tmp_path, b"slow\n")
        proxy.fault = first_put("hang")
        outcome: list[str] = []
        worker = threading.Thread(target=lambda: outcome.append(
            uploader.put_file(bucket, "h.txt", path, 5, digest, RetryPolicy(attempts=2, backoff_s=0.01)).status))
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive() and outcome == ["uploaded"]
        uploader.close()
    assert s3.get_object(Bucket=bucket, Key="h.txt")["Body"].read() == b"slow\n"


def test_botocore_alone_with_crt_false_or_a_proxy_in_the_environment(s3_server, bucket: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    off = S3Uploader(destination(s3_server.url, bucket, crt=False), timeout_s=10, pool_size=2)
    assert off._crt is None
    off.close()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert crt_s3(object(), region="us-east-1", checksum="sha256", timeout_s=1, connections=1,
                  verify_tls=True) is None
    with S3Proxy(s3_server.url) as proxy:
        uploader = S3Uploader(destination(proxy.url, bucket), timeout_s=10, pool_size=2)
        path, digest = local_file(tmp_path, b"plain\n")
        uploader.put_file(bucket, "p.txt", path, 6, digest, RETRY)
        uploader.close()
    assert not _by_runtime(proxy.of("PutObject")[0])


def test_default_credentials_come_from_botocore_s_chain(s3_server, s3, bucket: str, tmp_path: Path) -> None:
    """No keys in the destination: the runtime signs with what botocore's chain resolved (here
    the environment's), asked through the delegate provider."""
    uploader = S3Uploader(destination(s3_server.url, bucket), timeout_s=10, pool_size=2)
    assert uploader._crt is not None and uploader._crt._credentials is None
    path, digest = local_file(tmp_path, hashlib.sha256(b"k").hexdigest().encode())
    assert uploader.put_file(bucket, "c.txt", path, 64, digest, RETRY).status == "uploaded"
    uploader.close()
    assert s3.head_object(Bucket=bucket, Key="c.txt")["ContentLength"] == 64


# ---------------------------------------------------------------------------- GETs (the s3 source)


def _runtime(client: object) -> CrtS3:
    made = crt_s3(client, region="us-east-1", timeout_s=5, connections=4, verify_tls=True,
                  access_key_id="testing", secret_access_key="t")
    assert made is not None
    return made


def test_a_get_streams_the_body_in_order_with_botocore_s_answer(s3_server, s3, bucket: str) -> None:
    body = bytes(range(256)) * 3000  # 768,000 bytes: several pieces
    s3.put_object(Bucket=bucket, Key="d/é x.bin", Body=body)
    with S3Proxy(s3_server.url) as proxy:
        runtime = _runtime(s3_client(proxy.url))
        pieces: list[bytes] = []
        answer = runtime.get(bucket, "d/é x.bin", pieces.append)
        runtime.close()
    assert b"".join(pieces) == body
    head = s3.head_object(Bucket=bucket, Key="d/é x.bin")
    assert answer["ETag"] == head["ETag"] and answer["LastModified"] == head["LastModified"]
    (get,) = proxy.of("GetObject")
    assert _by_runtime(get)


def test_a_missing_key_is_no_such_key_and_a_failing_write_ends_the_get(s3_server, s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x" * 1000)
    runtime = _runtime(s3_client(s3_server.url))
    with pytest.raises(ClientError) as missing:
        runtime.get(bucket, "absent", lambda chunk: None)
    assert missing.value.response["Error"]["Code"] == "NoSuchKey"
    assert missing.value.operation_name == "GetObject"

    class Full(Exception):
        pass

    def refuse(chunk: bytes) -> None:
        raise Full("no room")

    with pytest.raises(Full):
        runtime.get(bucket, "k", refuse)
    runtime.close()


def test_a_stop_cancels_a_get_that_gets_no_answer(s3_server, s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"x")
    stop = threading.Event()
    with S3Proxy(s3_server.url) as proxy:
        proxy.fault = lambda request: "hang"
        runtime = _runtime(s3_client(proxy.url))
        threading.Timer(0.3, stop.set).start()
        with pytest.raises(TransferStopped):
            runtime.get(bucket, "k", lambda chunk: None, stop=stop)
        runtime.close()


def test_the_s3_source_reads_small_objects_through_the_runtime_unless_crt_false(s3_server, s3, bucket: str,
                                                                               tmp_path: Path) -> None:
    from modules.s3_module.main import S3Module
    from tests.modules.s3_module.test_s3_module import fetch_all, make_ctx, make_source

    s3.put_object(Bucket=bucket, Key="in/small.csv", Body=b"a\n1\n")
    with S3Proxy(s3_server.url) as proxy:
        for crt in (True, False):
            source = make_source(bucket=bucket, prefix="in/", endpoint_url=proxy.url, crt=crt,
                                 access_key_id="testing", secret_access_key="testing")
            files = fetch_all(S3Module(source, make_ctx()), tmp_path / str(crt))
            assert [f.path.read_bytes() for f in files] == [b"a\n1\n"]
    first, second = proxy.of("GetObject")
    assert _by_runtime(first) and not _by_runtime(second)
