"""Resumable multipart uploads against moto behind the recording proxy: only missing parts are sent."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from common.config_model import DestinationConfig
from common.exceptions import TransientUploadError, UploadError, UploadWithdrawn, is_transient
from common.multipart_state import PartRecord, StateStore, UploadState
from common.multipart_upload import LocalFileChanged, UploadStopped
from common.retry import RetryPolicy
from common.s3_uploader import S3Uploader
from tests.servers.s3_proxy import FaultRule, ProxyRequest, S3Proxy

MB = 1 << 20
SIZE = 40 * MB
PARTS = 8  # of 5 MiB


def destination(url: str, bucket: str, **changes: object) -> DestinationConfig:
    base = DestinationConfig(bucket=bucket, endpoint_url=url,
                             region="us-east-1", checksum="sha256", access_key_id=None, secret_access_key=None,
                             multipart_threshold_mb=5, multipart_chunksize_mb=5, max_concurrency=2)
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


@pytest.fixture(autouse=True)
def empty_bucket_after(s3, bucket: str) -> Iterator[None]:  # noqa: ANN001
    """moto keeps objects in this process's memory: drop what the test wrote."""
    yield
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=obj["Key"])
    for upload in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])


@pytest.fixture(scope="module")
def module_proxy(s3_server) -> Iterator[S3Proxy]:  # noqa: ANN001
    with S3Proxy(s3_server.url) as proxy:
        yield proxy


@pytest.fixture()
def proxy(module_proxy: S3Proxy) -> S3Proxy:
    module_proxy.fault = None
    module_proxy.clear()
    return module_proxy


@pytest.fixture()
def big(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "big.bin"
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def uploader(proxy: S3Proxy, bucket: str, state_dir: Path, **changes: object) -> S3Uploader:
    return S3Uploader(destination(proxy.url, bucket, **changes), timeout_s=30, pool_size=2, state_dir=state_dir)


def stop_after_parts(n: int, stop: threading.Event) -> FaultRule:
    """A proxy hook (never a fault) that sets ``stop`` when the ``n``-th part arrives."""
    seen = 0

    def hook(request: ProxyRequest) -> None:
        nonlocal seen
        if request.operation == "UploadPart":
            seen += 1
            if seen >= n:
                stop.set()

    return hook


def reset_parts_after(n: int) -> FaultRule:
    """A proxy rule that lets ``n`` parts through, then resets every later part, as a crash would."""
    forwarded = 0

    def rule(request: ProxyRequest) -> str | None:
        nonlocal forwarded
        if request.operation != "UploadPart":
            return None
        forwarded += 1
        return "reset" if forwarded > n else None

    return rule


def cut_off_upload(proxy: S3Proxy, bucket: str, state_dir: Path, path: Path, digest: str) -> dict:
    """Start an upload and cut every part after the third, as a crash would leave it; returns
    its state file's document (a transient failure keeps the upload resumable)."""
    proxy.fault = reset_parts_after(3)
    first = uploader(proxy, bucket, state_dir)
    with pytest.raises(TransientUploadError):
        first.put_file(bucket, "p/big.bin", path, SIZE, digest, RetryPolicy(attempts=1))
    first.close()
    proxy.fault = None
    [state_file] = state_dir.glob("*.json")
    return json.loads(state_file.read_text())


def part_numbers(proxy: S3Proxy, since: int = 0, ok: bool = False) -> list[int]:
    """The distinct part numbers sent (a try that timed out under load may send one twice)."""
    return sorted({r.part_number for r in proxy.of("UploadPart", since) if r.ok or not ok})  # type: ignore[misc]


def assert_landed(s3, bucket: str, key: str, digest: str, state_dir: Path) -> None:  # noqa: ANN001
    obj = s3.get_object(Bucket=bucket, Key=key)
    assert obj["Metadata"]["sha256"] == digest
    assert hashlib.sha256(obj["Body"].read()).hexdigest() == digest, "byte-identical"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], "no incomplete upload left"
    assert list(state_dir.glob("*")) == [], "the state file is gone"


def test_upload_cut_off_by_resets_resumes_with_the_missing_parts_only(s3, bucket: str, proxy: S3Proxy,  # noqa: ANN001
                                                                       big: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = big
    state_dir = tmp_path / "uploads"
    proxy.fault = reset_parts_after(4)
    first = uploader(proxy, bucket, state_dir)
    with pytest.raises(TransientUploadError) as info:
        first.put_file(bucket, "data/big.bin", path, SIZE, digest, RetryPolicy(attempts=1))
    first.close()
    assert is_transient(info.value)
    [state_file] = state_dir.glob("*.json")
    done = sorted(int(n) for n in json.loads(state_file.read_text())["parts"])
    assert done == part_numbers(proxy, ok=True) == [1, 2, 3, 4]
    assert not proxy.of("CompleteMultipartUpload")

    proxy.fault = None
    mark = len(proxy.requests)
    second = uploader(proxy, bucket, state_dir)
    t0 = time.monotonic()
    outcome = second.put_file(bucket, "data/big.bin", path, SIZE, digest, RetryPolicy(attempts=1))
    second.close()
    assert outcome.status == "uploaded"
    assert part_numbers(proxy, mark) == [5, 6, 7, 8], "only the missing parts are sent"
    assert not proxy.of("CreateMultipartUpload", mark), "the same upload is resumed"
    assert len(proxy.of("ListParts", mark)) == 1 and len(proxy.of("CompleteMultipartUpload", mark)) == 1
    assert_landed(s3, bucket, "data/big.bin", digest, state_dir)
    print(f"\nresumed {PARTS - len(done)} of {PARTS} parts in {time.monotonic() - t0:.2f}s")


def test_stop_aborts_the_upload_and_leaves_no_parts(s3, bucket: str, proxy: S3Proxy,  # noqa: ANN001
                                                    big: tuple[Path, str], tmp_path: Path) -> None:
    """SIGINT/SIGTERM/deadline: the parts in flight finish, then the upload is aborted."""
    path, digest = big
    state_dir = tmp_path / "uploads"
    stop = threading.Event()
    proxy.fault = stop_after_parts(3, stop)
    first = uploader(proxy, bucket, state_dir)
    with pytest.raises(UploadStopped):
        first.put_file(bucket, "p/big.bin", path, SIZE, digest, RetryPolicy(attempts=3, backoff_s=0.01, stop=stop))
    first.close()
    proxy.fault = None
    assert 3 <= len(part_numbers(proxy, ok=True)) < PARTS
    assert not proxy.of("CompleteMultipartUpload") and len(proxy.of("AbortMultipartUpload")) == 1
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], "no orphaned parts"
    assert list(state_dir.glob("*.json")) == []
    with pytest.raises(Exception, match="404|Not Found"):
        s3.head_object(Bucket=bucket, Key="p/big.bin")

    second = uploader(proxy, bucket, state_dir)
    assert second.put_file(bucket, "p/big.bin", path, SIZE, digest, RetryPolicy(attempts=2)).status == "uploaded"
    second.close()
    assert_landed(s3, bucket, "p/big.bin", digest, state_dir)


def test_commit_is_asked_once_every_part_is_sent_and_no_withdraws_the_upload(
        s3, bucket: str, proxy: S3Proxy, big: tuple[Path, str], tmp_path: Path) -> None:
    """The engine sends a large file's parts while validating it: ``commit`` comes after the
    parts and before the completion; False aborts, and nothing is left behind."""
    path, digest = big
    state_dir = tmp_path / "uploads"
    seen: list[int] = []

    def no() -> bool:
        seen.append(len(part_numbers(proxy, ok=True)))
        return False

    up = uploader(proxy, bucket, state_dir)
    with pytest.raises(UploadWithdrawn):
        up.put_file(bucket, "p/big.bin", path, SIZE, digest, RetryPolicy(attempts=2), commit=no)
    assert seen == [PARTS], "asked once, every part sent"
    assert not proxy.of("CompleteMultipartUpload") and len(proxy.of("AbortMultipartUpload")) == 1
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], "no orphaned parts"
    assert list(state_dir.glob("*.json")) == []
    with pytest.raises(Exception, match="404|Not Found"):
        s3.head_object(Bucket=bucket, Key="p/big.bin")

    asked: list[bool] = []
    assert up.put_file(bucket, "p/big.bin", path, SIZE, digest, RetryPolicy(attempts=2),
                       commit=lambda: asked.append(True) or True).status == "uploaded"
    assert asked == [True]
    assert up.put_file(bucket, "p/big.bin", path, SIZE, digest, RetryPolicy(attempts=2),
                       commit=lambda: asked.append(False) or False).status == "skipped_same"
    assert asked == [True], "not asked when nothing is written"
    up.close()
    assert_landed(s3, bucket, "p/big.bin", digest, state_dir)


def test_a_single_put_is_withdrawn_before_it_is_sent(s3, bucket: str, proxy: S3Proxy,
                                                     tmp_path: Path) -> None:
    path = tmp_path / "small.csv"
    path.write_bytes(b"id\n1\n")
    up = uploader(proxy, bucket, tmp_path / "uploads")
    with pytest.raises(UploadWithdrawn):
        up.put_file(bucket, "small.csv", path, 5, hashlib.sha256(b"id\n1\n").hexdigest(), RetryPolicy(),
                    commit=lambda: False)
    up.close()
    assert not proxy.of("PutObject")
    with pytest.raises(Exception, match="404|Not Found"):
        s3.head_object(Bucket=bucket, Key="small.csv")


def test_cut_off_upload_is_resumed_with_the_missing_parts(s3, bucket: str, proxy: S3Proxy,  # noqa: ANN001
                                                          big: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = big
    state_dir = tmp_path / "uploads"
    state = cut_off_upload(proxy, bucket, state_dir, path, digest)
    done = sorted(int(n) for n in state["parts"])
    assert done == part_numbers(proxy, ok=True), "every part that landed is recorded"
    assert 3 <= len(done) < PARTS
    assert not proxy.of("CompleteMultipartUpload") and not proxy.of("AbortMultipartUpload")
    uploads = s3.list_multipart_uploads(Bucket=bucket)["Uploads"]
    assert [u["UploadId"] for u in uploads] == [state["upload_id"]]

    mark = len(proxy.requests)
    second = uploader(proxy, bucket, state_dir)
    assert second.put_file(bucket, "p/big.bin", path, SIZE, digest, RetryPolicy(attempts=2)).status == "uploaded"
    second.close()
    assert part_numbers(proxy, mark) == [n for n in range(1, PARTS + 1) if n not in done]
    assert_landed(s3, bucket, "p/big.bin", digest, state_dir)


def test_a_changed_local_file_does_not_reuse_the_stale_upload(s3, bucket: str, proxy: S3Proxy,  # noqa: ANN001
                                                              big: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = big
    state_dir = tmp_path / "uploads"
    old = cut_off_upload(proxy, bucket, state_dir, path, digest)
    data = os.urandom(SIZE)
    path.write_bytes(data)
    new_digest = hashlib.sha256(data).hexdigest()
    mark = len(proxy.requests)
    second = uploader(proxy, bucket, state_dir)
    assert second.put_file(bucket, "p/big.bin", path, SIZE, new_digest, RetryPolicy()).status == "uploaded"
    second.close()
    assert [r.params["uploadId"] for r in proxy.of("AbortMultipartUpload", mark)] == [old["upload_id"]]
    assert len(proxy.of("CreateMultipartUpload", mark)) == 1
    assert part_numbers(proxy, mark) == list(range(1, PARTS + 1)), "every part of the new file is sent"
    assert_landed(s3, bucket, "p/big.bin", new_digest, state_dir)


def test_a_file_changed_after_hashing_is_aborted_not_completed(s3, bucket: str, proxy: S3Proxy,  # noqa: ANN001
                                                               big: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = big
    state_dir = tmp_path / "uploads"
    claimed = hashlib.sha256(b"what the source said").hexdigest()
    up = uploader(proxy, bucket, state_dir)
    with pytest.raises(LocalFileChanged) as info:
        up.put_file(bucket, "p/big.bin", path, SIZE, claimed, RetryPolicy())
    up.close()
    assert isinstance(info.value, UploadError) and not is_transient(info.value)
    assert len(proxy.of("AbortMultipartUpload")) == 1 and not proxy.of("CompleteMultipartUpload")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert list(state_dir.glob("*")) == []
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_an_upload_aborted_elsewhere_starts_afresh(s3, bucket: str, proxy: S3Proxy,  # noqa: ANN001
                                                   big: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = big
    state_dir = tmp_path / "uploads"
    old = cut_off_upload(proxy, bucket, state_dir, path, digest)
    s3.abort_multipart_upload(Bucket=bucket, Key="p/big.bin", UploadId=old["upload_id"])
    mark = len(proxy.requests)
    second = uploader(proxy, bucket, state_dir)
    assert second.put_file(bucket, "p/big.bin", path, SIZE, digest, RetryPolicy()).status == "uploaded"
    second.close()
    assert part_numbers(proxy, mark) == list(range(1, PARTS + 1))
    assert_landed(s3, bucket, "p/big.bin", digest, state_dir)


def test_stale_uploads_are_aborted_on_first_use_of_the_bucket(s3, bucket: str, proxy: S3Proxy,  # noqa: ANN001
                                                              big: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = big
    state_dir = tmp_path / "uploads"
    ours = cut_off_upload(proxy, bucket, state_dir, path, digest)
    [state_file] = state_dir.glob("*.json")
    state_file.write_text(json.dumps({**ours, "created_at": time.time() - 2 * 86400}))
    # moto dates every upload 2010-11-10: these look abandoned, but no state of ours knows them
    under_our_prefix = s3.create_multipart_upload(Bucket=bucket, Key="p/svc/other-tool.bin")["UploadId"]
    foreign = s3.create_multipart_upload(Bucket=bucket, Key="elsewhere/keep.bin")["UploadId"]

    mark = len(proxy.requests)
    small = tmp_path / "small.txt"
    small.write_bytes(b"small\n")
    up = uploader(proxy, bucket, state_dir)
    up.put_file(bucket, "p/svc/small.txt", small, 6, hashlib.sha256(b"small\n").hexdigest(), RetryPolicy())
    up.put_file(bucket, "p/svc/small2.txt", small, 6, hashlib.sha256(b"small\n").hexdigest(), RetryPolicy())
    up.close()
    aborted = {r.params["uploadId"] for r in proxy.of("AbortMultipartUpload", mark)}
    assert aborted == {ours["upload_id"]}, "only the upload our stale state file knows"
    assert not proxy.of("ListMultipartUploads", mark), "the bucket's uploads are never listed"
    remaining = {u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    assert remaining == {under_our_prefix, foreign}, "uploads we hold no state of are not ours to abort"
    assert list(state_dir.glob("*")) == []


def test_a_stale_upload_another_process_holds_is_not_swept(s3, bucket: str, proxy: S3Proxy,  # noqa: ANN001
                                                           big: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = big
    state_dir = tmp_path / "uploads"
    ours = cut_off_upload(proxy, bucket, state_dir, path, digest)
    [state_file] = state_dir.glob("*.json")
    state_file.write_text(json.dumps({**ours, "created_at": time.time() - 2 * 86400}))
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(StateStore(state_dir).key_lock(bucket, "p/big.bin").path)],
                              stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        mark = len(proxy.requests)
        small = tmp_path / "small.txt"
        small.write_bytes(b"small\n")
        up = uploader(proxy, bucket, state_dir)
        up.put_file(bucket, "p/small.txt", small, 6, hashlib.sha256(b"small\n").hexdigest(), RetryPolicy())
        up.close()
        assert not proxy.of("AbortMultipartUpload", mark), "another process is using that upload now"
        assert state_file.exists()
    finally:
        holder.communicate(b"\n", timeout=30)
    up = uploader(proxy, bucket, state_dir)
    up.put_file(bucket, "p/small2.txt", small, 6, hashlib.sha256(b"small\n").hexdigest(), RetryPolicy())
    up.close()
    assert {r.params["uploadId"] for r in proxy.of("AbortMultipartUpload", mark)} == {ours["upload_id"]}
    assert list(state_dir.glob("*.json")) == []


#: A child process that holds a FileLock until it reads a line.
HOLD_LOCK = """
import sys
from pathlib import Path
from common.file_lock import FileLock
lock = FileLock(Path(sys.argv[1]))
assert lock.try_acquire()
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_lost_complete_answer_is_not_a_failure(s3, bucket: str, proxy: S3Proxy,  # noqa: ANN001
                                                 big: tuple[Path, str], tmp_path: Path) -> None:
    path, digest = big
    lost: list[ProxyRequest] = []

    def lose_first_complete(request: ProxyRequest) -> str | None:
        if request.operation == "CompleteMultipartUpload" and not lost:
            lost.append(request)
            return "reset_after"
        return None

    proxy.fault = lose_first_complete
    up = uploader(proxy, bucket, tmp_path / "uploads")
    assert up.put_file(bucket, "p/big.bin", path, SIZE, digest, RetryPolicy(backoff_s=0.01)).status == "uploaded"
    up.close()
    [complete] = proxy.of("CompleteMultipartUpload")
    assert (complete.status, complete.delivered) == (200, False), "done once, its answer lost, not sent again"
    assert proxy.of("HeadObject")[-2].ok, "a HEAD found it done"
    assert not proxy.of("AbortMultipartUpload")
    assert_landed(s3, bucket, "p/big.bin", digest, tmp_path / "uploads")


@pytest.mark.parametrize("mode", ["sha256", "crc32", "when_required"])
def test_checksum_modes_complete_and_leave_nothing(s3, bucket: str, proxy: S3Proxy, tmp_path: Path,  # noqa: ANN001
                                                   mode: str) -> None:
    data = os.urandom(12 * MB)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    up = uploader(proxy, bucket, tmp_path / "uploads", checksum=mode, max_concurrency=4)
    assert up.put_file(bucket, "f.bin", path, len(data), digest, RetryPolicy()).status == "uploaded"
    assert up.put_file(bucket, "f.bin", path, len(data), digest, RetryPolicy()).status == "skipped_same"
    up.close()
    assert part_numbers(proxy) == [1, 2, 3]
    assert "-3" in s3.head_object(Bucket=bucket, Key="f.bin")["ETag"]
    assert_landed(s3, bucket, "f.bin", digest, tmp_path / "uploads")


def test_upload_state_round_trips_through_its_file(tmp_path: Path) -> None:
    state = UploadState("b", "in/big.csv", "ab" * 32, 100, 50, "upload-1", 1700000000.5,
                        {2: PartRecord('"e2"', 50, "cd" * 32, None), 1: PartRecord('"e1"', 50, "ef" * 32, "QUJD")})
    store = StateStore(tmp_path)
    store.save(state)
    assert store.states() == [state]
    assert [p.name for p in tmp_path.iterdir()] == [store.name_of(state)]  # no temp file left behind
