"""The uploader against moto's server over HTTP: sha256 metadata, skip-same, parts, checksum modes."""

from __future__ import annotations

import base64
import hashlib
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from common.config_model import DestinationConfig
from common.exceptions import UploadError
from common.interfaces.base_module import StoredAt
from common.key_index import ABSENT, UNKNOWN, Existing, KeyIndex
from common.retry import RetryPolicy
from common.s3_client import s3_store
from common.s3_uploader import S3Uploader, UploaderPool
from tests.servers.s3_proxy import S3Proxy

RETRY = RetryPolicy(attempts=2, backoff_s=0.01)


def destination(url: str, bucket: str, **changes: object) -> DestinationConfig:
    base = DestinationConfig(bucket=bucket, endpoint_url=url, region="us-east-1",
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
def test_upload_then_skip_same_then_replace(s3_server, s3, bucket: str, tmp_path: Path, mode: str) -> None:
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


def test_multipart_upload_carries_sha256(s3_server, s3, bucket: str, tmp_path: Path) -> None:
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


def test_put_json_is_idempotent(s3_server, s3, bucket: str) -> None:
    uploader = S3Uploader(destination(s3_server.url, bucket), timeout_s=10, pool_size=2)
    assert uploader.put_json(bucket, "e.json", {"a": 1}, RETRY) == "uploaded"
    assert uploader.put_json(bucket, "e.json", {"a": 1}, RETRY) == "skipped_same"
    assert uploader.put_json(bucket, "e.json", {"a": 2}, RETRY) == "uploaded"
    assert "sha256" in s3.head_object(Bucket=bucket, Key="e.json")["Metadata"]
    uploader.close()


def test_missing_bucket_is_not_transient(s3_server, tmp_path: Path) -> None:
    uploader = S3Uploader(destination(s3_server.url, "no-such-bucket-x"), timeout_s=10, pool_size=2)
    path, digest = local_file(tmp_path, b"x")
    with pytest.raises(UploadError) as info:
        uploader.put_file("no-such-bucket-x", "x", path, 1, digest, RETRY)
    assert "NoSuchBucket" in str(info.value) or "404" in str(info.value)
    uploader.close()


def test_pool_shares_one_uploader_per_destination(s3_server, bucket: str) -> None:
    pool = UploaderPool(pool_size=4)
    a = pool.get(destination(s3_server.url, bucket), 10)
    b = pool.get(destination(s3_server.url, "other-bucket"), 10)
    c = pool.get(destination(s3_server.url, bucket, checksum="crc32"), 10)
    assert a is b and a is not c
    pool.close()


def test_destination_tls_verification_switch_warns(s3_server, bucket: str) -> None:
    from structlog.testing import capture_logs

    with capture_logs() as logs:
        on = S3Uploader(destination(s3_server.url, bucket), timeout_s=10, pool_size=2)
        off = S3Uploader(destination(s3_server.url, bucket, verify_tls=False), timeout_s=10, pool_size=2)
    assert on.client._endpoint.http_session._verify is not False
    assert off.client._endpoint.http_session._verify is False
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["tls_verification_disabled"]
    on.close()
    off.close()


# --------------------------------------------------------------- requests per file


def _ops(proxy: S3Proxy, since: int = 0) -> Counter[str]:
    return Counter(r.operation for r in proxy.requests[since:] if r.operation not in ("ListMultipartUploads",))


def test_one_put_per_new_file_and_nothing_for_a_same_one(s3_server, s3, bucket: str, tmp_path: Path) -> None:
    """A folder is listed once; a new file costs one PUT, verified by its answer (ETag = MD5),
    and a file already there costs nothing more than that listing: no HEAD either way."""
    files = {f"d/f{i}.txt": f"content {i}\n".encode() for i in range(5)}
    paths = {key: local_file(tmp_path, data, key.replace("/", "_")) for key, data in files.items()}
    with S3Proxy(s3_server.url) as proxy:
        uploader = S3Uploader(destination(proxy.url, bucket), timeout_s=10, pool_size=2)
        for key, (path, digest) in paths.items():
            assert uploader.put_file(bucket, key, path, len(files[key]), digest, RETRY).status == "uploaded"
        assert _ops(proxy) == Counter({"ListObjects": 1, "PutObject": 5})
        mark = len(proxy.requests)
        for key, (path, digest) in paths.items():  # the same uploader knows what it wrote
            assert uploader.put_file(bucket, key, path, len(files[key]), digest, RETRY).status == "skipped_same"
        assert _ops(proxy, mark) == Counter()
        uploader.close()

        mark = len(proxy.requests)
        again = S3Uploader(destination(proxy.url, bucket), timeout_s=10, pool_size=2)  # the next run
        for key, (path, digest) in paths.items():
            assert again.put_file(bucket, key, path, len(files[key]), digest, RETRY).status == "skipped_same"
        changed, digest = local_file(tmp_path, b"content 0, changed\n", "changed")
        assert again.put_file(bucket, "d/f0.txt", changed, 19, digest, RETRY).status == "uploaded"
        assert _ops(proxy, mark) == Counter({"ListObjects": 1, "PutObject": 1})
        again.close()
    for key, data in files.items():
        obj = s3.get_object(Bucket=bucket, Key=key)
        assert obj["Metadata"]["sha256"] == hashlib.sha256(obj["Body"].read()).hexdigest()
        assert key == "d/f0.txt" or obj["ContentLength"] == len(data)


def test_same_content_written_by_someone_else_is_recognised_by_its_etag(s3_server, s3, bucket: str,
                                                                        tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="x/a.csv", Body=b"a,b\n1,2\n")  # no sha256 metadata
    path, digest = local_file(tmp_path, b"a,b\n1,2\n")
    uploader = S3Uploader(destination(s3_server.url, bucket), timeout_s=10, pool_size=2)
    assert uploader.put_file(bucket, "x/a.csv", path, 8, digest, RETRY).status == "skipped_same"
    uploader.close()


def test_a_folder_that_cannot_be_listed_is_asked_about_with_heads(s3_server, bucket: str,
                                                                  tmp_path: Path) -> None:
    path, digest = local_file(tmp_path, b"payload\n")
    no_listing = lambda request: "503" if request.operation == "ListObjects" else None
    with S3Proxy(s3_server.url, fault=no_listing) as proxy:
        uploader = S3Uploader(destination(proxy.url, bucket), timeout_s=10, pool_size=2)
        assert uploader.put_file(bucket, "f/a.txt", path, 8, digest, RETRY).status == "uploaded"
        second = S3Uploader(destination(proxy.url, bucket), timeout_s=10, pool_size=2)
        assert second.put_file(bucket, "f/a.txt", path, 8, digest, RETRY).status == "skipped_same"
        ops = _ops(proxy)
        assert ops["ListObjects"] == 2 * RETRY.attempts and ops["PutObject"] == 1 and ops["HeadObject"] == 2
        uploader.close()
        second.close()


def test_key_index_answers_unknown_past_its_page_limit(s3_server, s3, bucket: str) -> None:
    for i in range(5):
        s3.put_object(Bucket=bucket, Key=f"big/k{i}", Body=b"x" * i)
    s3.put_object(Bucket=bucket, Key="big/sub/deeper", Body=b"y")
    index = KeyIndex(s3, max_pages=2, page_size=2)
    assert index.lookup(bucket, "big/k1", RETRY) == Existing(1, hashlib.md5(b"x").hexdigest())
    assert index.lookup(bucket, "big/k4", RETRY) is UNKNOWN, "listed 4 of 5 keys: the rest is not known"
    complete = KeyIndex(s3, max_pages=3, page_size=2)
    assert complete.lookup(bucket, "big/k4", RETRY) == Existing(4, hashlib.md5(b"xxxx").hexdigest())
    assert complete.lookup(bucket, "big/nothing", RETRY) is ABSENT
    assert complete.lookup(bucket, "big/sub/deeper", RETRY) == Existing(1, hashlib.md5(b"y").hexdigest())
    complete.forget(bucket, "big/k4")
    assert complete.lookup(bucket, "big/nothing", RETRY) is UNKNOWN, "after a failed upload the folder is unsure"


@pytest.mark.parametrize("mode", ["sha256", "crc32", "when_required"])
def test_bodies_are_hashed_for_the_signature_only_without_a_sha256_checksum(
        s3_server, bucket: str, tmp_path: Path, mode: str) -> None:
    """Over http a body whose SHA-256 travels as ``x-amz-checksum-sha256`` is not hashed again
    for SigV4; with a CRC32 or no checksum, the signature covers the body."""
    data = os.urandom((5 << 20) + 100)
    with S3Proxy(s3_server.url) as proxy:
        uploader = S3Uploader(destination(proxy.url, bucket, checksum=mode, multipart_threshold_mb=5,
                                          multipart_chunksize_mb=5), timeout_s=30, pool_size=2)
        small, small_digest = local_file(tmp_path, b"a,b\n1,2\n", "small.csv")
        big, big_digest = local_file(tmp_path, data, "big.bin")
        uploader.put_file(bucket, "in/small.csv", small, small.stat().st_size, small_digest, RETRY)
        uploader.put_file(bucket, "in/big.bin", big, len(data), big_digest, RETRY)
        uploader.close()
    bodies = proxy.of("PutObject") + proxy.of("UploadPart")
    assert len(bodies) == 3  # one small PUT, two parts
    for request in bodies:
        payload = request.headers["x-amz-content-sha256"]
        if mode == "sha256":
            assert payload == "UNSIGNED-PAYLOAD" and request.headers["x-amz-checksum-sha256"]
        else:
            assert len(payload) == 64 and int(payload, 16) >= 0  # the body's own SHA-256, signed


def test_multipart_upload_sends_the_part_digests_streamed_while_fetching(s3_server, s3, bucket: str,
                                                                        tmp_path: Path) -> None:
    """The FileSink's part digests become the parts' checksums as they are: the file is not
    read and hashed once more. Digests for another part size are not used."""
    from common.file_sink import FileSink
    from common.stream_hooks import PartSha256Hook

    data = os.urandom((12 << 20) + 3)
    computed: dict = {}
    with FileSink(tmp_path, "big.bin", "ftp://h/big.bin", {}, hooks={"part_sha256": PartSha256Hook(5 << 20, 5 << 20)},
                  on_finish=lambda path, results: computed.update(results)) as sink:
        for start in range(0, len(data), 1 << 20):
            sink.write(data[start:start + (1 << 20)])
        fetched = sink.finish()
    part_size, part_sha256 = computed["part_sha256"]
    assert part_size == 5 << 20 and len(part_sha256) == 3

    def sent_checksums(part_size: int, digests: tuple[str, ...], key: str) -> list[str]:
        with S3Proxy(s3_server.url) as proxy:
            uploader = S3Uploader(destination(proxy.url, bucket, multipart_threshold_mb=5, multipart_chunksize_mb=5),
                                  timeout_s=30, pool_size=2)
            outcome = uploader.put_file(bucket, key, fetched.path, fetched.size, fetched.sha256, RETRY,
                                        streamed={"part_sha256": (part_size, digests)})
            uploader.close()
        assert outcome.status == "uploaded"
        assert hashlib.sha256(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest() == fetched.sha256
        parts = sorted(proxy.of("UploadPart"), key=lambda r: r.part_number or 0)
        return [base64.b64decode(r.headers["x-amz-checksum-sha256"]).hex() for r in parts]

    assert sent_checksums(5 << 20, part_sha256, "streamed.bin") == list(part_sha256)
    stand_ins = tuple(hashlib.sha256(str(n).encode()).hexdigest() for n in range(3))
    # digests of 4 MiB parts do not fit 5 MiB parts: the uploader hashes the file itself
    assert sent_checksums(4 << 20, stand_ins, "hashed.bin") == list(part_sha256)
    # and given digests are used as they are (moto does not check part checksums, a store does)
    assert sent_checksums(5 << 20, stand_ins, "as-given.bin") == list(stand_ins)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.mark.parametrize("mode", ["sha256", "crc32"])
def test_an_object_of_the_same_store_is_copied_server_side_and_verified(
        s3_server, s3, bucket: str, tmp_path: Path, mode: str) -> None:
    """A file read from an object of this store is copied there (CopyObject, no body sent; the
    local file is not even read) and carries our metadata; the copy's checksum or ETag proves it."""
    data = b"id,name\n1,a\n" * 500
    s3.create_bucket(Bucket=f"{bucket}-src")
    etag = s3.put_object(Bucket=f"{bucket}-src", Key="in/a.csv", Body=data)["ETag"].strip('"')
    path, digest = local_file(tmp_path, data)
    path.unlink()  # the copy must not need it
    source = StoredAt(s3_store(s3_server.url), f"{bucket}-src", "in/a.csv", etag)
    with S3Proxy(s3_server.url) as proxy:
        uploader = S3Uploader(destination(proxy.url, bucket, checksum=mode), timeout_s=10, pool_size=2)
        outcome = uploader.put_file(bucket, "out/a.csv", path, len(data), digest, RETRY,
                                    streamed={"md5": _md5(data)}, copy_from=source)
        assert outcome.status == "uploaded"
        assert _ops(proxy) == Counter({"ListObjects": 1, "CopyObject": 1})
        uploader.close()
    head = s3.head_object(Bucket=bucket, Key="out/a.csv")
    assert head["Metadata"] == {"sha256": digest} and head["ContentLength"] == len(data)
    assert s3.get_object(Bucket=bucket, Key="out/a.csv")["Body"].read() == data


def test_a_copy_that_is_not_the_fetched_bytes_is_replaced_by_an_upload(s3_server, s3, bucket: str,
                                                                       tmp_path: Path) -> None:
    """The source object changed after it was read (a store that ignores CopySourceIfMatch, as
    moto does): the copy's checksum differs, so the validated local file is uploaded over it."""
    s3.create_bucket(Bucket=f"{bucket}-src")
    etag = s3.put_object(Bucket=f"{bucket}-src", Key="a.csv", Body=b"id\n1\n")["ETag"].strip('"')
    s3.put_object(Bucket=f"{bucket}-src", Key="a.csv", Body=b"id\n2\n")  # changed since it was read
    path, digest = local_file(tmp_path, b"id\n1\n")
    with S3Proxy(s3_server.url) as proxy:
        uploader = S3Uploader(destination(proxy.url, bucket), timeout_s=10, pool_size=2)
        outcome = uploader.put_file(bucket, "a.csv", path, 5, digest, RETRY,
                                    copy_from=StoredAt(s3_store(s3_server.url), f"{bucket}-src", "a.csv", etag))
        assert outcome.status == "uploaded"
        assert _ops(proxy)["CopyObject"] == 1 and _ops(proxy)["PutObject"] == 1
        uploader.close()
    assert s3.get_object(Bucket=bucket, Key="a.csv")["Body"].read() == b"id\n1\n"


def test_a_refused_copy_is_uploaded_and_not_asked_again(s3_server, s3, bucket: str, tmp_path: Path) -> None:
    path, digest = local_file(tmp_path, b"id\n1\n")
    gone = StoredAt(s3_store(s3_server.url), f"{bucket}-missing", "a.csv", "0" * 32)
    with S3Proxy(s3_server.url) as proxy:
        uploader = S3Uploader(destination(proxy.url, bucket), timeout_s=10, pool_size=2)
        for key in ("a.csv", "b.csv"):
            assert uploader.put_file(bucket, key, path, 5, digest, RETRY, copy_from=gone).status == "uploaded"
        assert _ops(proxy)["CopyObject"] == 1 and _ops(proxy)["PutObject"] == 2
        uploader.close()
    assert s3.get_object(Bucket=bucket, Key="b.csv")["Body"].read() == b"id\n1\n"
