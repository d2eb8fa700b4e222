"""S3Module against a real moto server over HTTP: listing, names, streaming, errors, validation."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import socket
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import pytest
from structlog.testing import capture_logs

from common.config_model import ValidateConfig
from common.exceptions import SourceError, is_transient
from common.frozen import freeze
from common.interfaces.base_module import FetchedFile, JobContext
from common.plugins import default_catalog
from common.retry import RetryPolicy
from common.run_resources import RunResources
from common.secret import Secret
from common.validators import ValidatorSet
from module_system.testing import TEST_AWS_KEY, TEST_AWS_SECRET, S3Server
from modules.s3_module.exceptions import S3AuthError, S3SourceError, S3TransientError
from modules.s3_module.main import S3Module, s3_client_for

RECORD_SCHEMA = {
    "type": "object",
    "required": ["id", "amount"],
    "properties": {"id": {"type": "integer"}, "amount": {"type": "number"}},
}


# ---------------------------------------------------------------------- helpers


def make_source(**values: Any) -> Mapping[str, Any]:
    """A source as the loader hands it over: schema defaults filled, checked, secrets wrapped, frozen."""
    schema = S3Module.source_schema
    source = {name: copy.deepcopy(prop["default"])
              for name, prop in schema["properties"].items() if "default" in prop}
    source.update(values)
    jsonschema.Draft202012Validator(schema).validate(source)
    for name, prop in schema["properties"].items():
        if prop.get("x-secret") and name in source:
            source[name] = Secret(source[name])
    return freeze(source)


def make_ctx(schema: Mapping[str, Any] | None = None, counter: Any = None) -> JobContext:
    validate = ValidateConfig(json_schema_path=None, json_schema=freeze(schema) if schema else None,
                              csv=None, html=None)
    return JobContext(
        run_id="run-1", job_id="job-1", service_id="svc-s3", module="s3",
        validators=ValidatorSet(validate), retry=RetryPolicy(attempts=2, backoff_s=0.01, counter=counter),
        timeout_s=10, stop=threading.Event(),
    )


def source_for(server: S3Server, bucket: str, **values: Any) -> Mapping[str, Any]:
    return make_source(bucket=bucket, endpoint_url=server.url, access_key_id=TEST_AWS_KEY,
                       secret_access_key=TEST_AWS_SECRET, **values)


def fetch_all(module: S3Module, workdir: Path) -> list[FetchedFile]:
    try:
        return list(module.fetch(workdir))
    finally:
        module.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def free_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CuttingProxy:
    """A TCP proxy to ``target`` that cuts the first connection once it has relayed
    ``cut_after`` response bytes: a download broken mid-body, from a real socket."""

    def __init__(self, target: str, cut_after: int) -> None:
        host, port = target.rsplit("//", 1)[1].split(":")
        self.target = (host, int(port))
        self.cut_after = cut_after
        self.cuts = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, response: bool) -> None:
        relayed = 0
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                relayed += len(data)
                if response and relayed > self.cut_after:
                    with self._lock:
                        cut = self.cuts == 0
                        self.cuts += cut
                    if cut:
                        break
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        self._listener.close()


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def s3_server() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture(scope="module")
def admin(s3_server: S3Server) -> Any:
    return s3_server.client()


@pytest.fixture
def bucket(admin: Any) -> str:
    name = f"src-{uuid.uuid4().hex[:16]}"
    admin.create_bucket(Bucket=name)
    return name


def put(admin: Any, bucket: str, objects: Mapping[str, bytes]) -> None:
    for key, body in objects.items():
        admin.put_object(Bucket=bucket, Key=key, Body=body)


# ---------------------------------------------------------------------- listing and names


def test_registered_under_its_entry_point() -> None:
    assert default_catalog().load("s3") is S3Module


def test_prefix_subfolders_kept_and_folder_markers_skipped(s3_server: S3Server, admin: Any, bucket: str,
                                                           tmp_path: Path) -> None:
    objects = {
        "vendor/fin/a.json": b'{"id": 1}',
        "vendor/fin/2024/": b"",
        "vendor/fin/2024/01/b.json": b'{"id": 2}',
        "vendor/fin/2024/01/c.csv": b"id\n1\n",
        "vendor/other/d.json": b"{}",
        "top.json": b"{}",
    }
    put(admin, bucket, objects)
    files = fetch_all(S3Module(source_for(s3_server, bucket, prefix="vendor/fin/"), make_ctx()), tmp_path)

    assert [f.name for f in files] == ["2024/01/b.json", "2024/01/c.csv", "a.json"]
    for f in files:
        key = f"vendor/fin/{f.name}"
        assert f.source_uri == f"s3://{bucket}/{key}"
        assert f.path.parent == tmp_path and f.path.suffix == PurePosixPath(f.name).suffix  # a name of its own
        assert f.path.read_bytes() == objects[key]
        assert f.size == len(objects[key])
        assert f.sha256 == sha256(objects[key])


def test_prefix_without_trailing_slash_is_cut_at_its_folder(s3_server: S3Server, admin: Any, bucket: str,
                                                             tmp_path: Path) -> None:
    put(admin, bucket, {"in/drop/x.json": b"1", "in/drop/sub/y.json": b"2", "in/dropx.json": b"3"})
    files = fetch_all(S3Module(source_for(s3_server, bucket, prefix="in/drop"), make_ctx()), tmp_path)
    assert [f.name for f in files] == ["drop/sub/y.json", "drop/x.json", "dropx.json"]


def test_include_globs_match_the_base_name(s3_server: S3Server, admin: Any, bucket: str, tmp_path: Path) -> None:
    put(admin, bucket, {"a.json": b"{}", "b.JSON": b"{}", "c.csv": b"x", "deep/d.jsonl": b"{}\n",
                        "deep/e.txt": b"t", "json/f.bin": b"b"})
    source = source_for(s3_server, bucket, include=["*.json", "*.jsonl"])
    files = fetch_all(S3Module(source, make_ctx()), tmp_path)
    assert [f.name for f in files] == ["a.json", "deep/d.jsonl"]


def test_default_include_takes_everything_in_key_order(s3_server: S3Server, admin: Any, bucket: str,
                                                       tmp_path: Path) -> None:
    keys = ["b/2.txt", "a.txt", "b/1.txt", "c"]
    put(admin, bucket, {k: k.encode() for k in keys})
    files = fetch_all(S3Module(source_for(s3_server, bucket), make_ctx()), tmp_path)
    assert [f.name for f in files] == sorted(keys)


def test_listing_follows_continuation_pages(s3_server: S3Server, admin: Any, bucket: str, tmp_path: Path) -> None:
    class SmallPages(S3Module):
        page_size = 2

    keys = [f"p/{i:02d}.json" for i in range(7)]
    put(admin, bucket, {k: b"{}" for k in keys})
    files = fetch_all(SmallPages(source_for(s3_server, bucket, prefix="p/"), make_ctx()), tmp_path)
    assert [f.name for f in files] == [k[2:] for k in keys]


def test_identity_carries_etag_size_and_last_modified(s3_server: S3Server, admin: Any, bucket: str,
                                                      tmp_path: Path) -> None:
    body = b"identity check"
    put(admin, bucket, {"id.txt": body})
    head = admin.head_object(Bucket=bucket, Key="id.txt")
    [fetched] = fetch_all(S3Module(source_for(s3_server, bucket), make_ctx()), tmp_path)
    assert fetched.identity["etag"] == head["ETag"].strip('"')
    assert fetched.identity["size"] == str(len(body))
    assert fetched.identity["last_modified"] == head["LastModified"].isoformat()


@pytest.mark.slow
def test_twenty_megabyte_object_streams_intact(s3_server: S3Server, admin: Any, bucket: str,
                                               tmp_path: Path) -> None:
    body = os.urandom(20 * 1024 * 1024)
    put(admin, bucket, {"big/blob.bin": body})
    [fetched] = fetch_all(S3Module(source_for(s3_server, bucket), make_ctx()), tmp_path)
    assert fetched.size == len(body)
    assert fetched.sha256 == sha256(body)
    assert sha256(fetched.path.read_bytes()) == sha256(body)


def test_download_cut_mid_body_is_retried_from_byte_zero(s3_server: S3Server, admin: Any, bucket: str,
                                                         tmp_path: Path) -> None:
    body = os.urandom(3 * 1024 * 1024)
    put(admin, bucket, {"cut.bin": body})
    proxy = CuttingProxy(s3_server.url, cut_after=1024 * 1024)
    retries: list[int] = []
    try:
        ctx = make_ctx(counter=lambda: retries.append(1))
        source = make_source(bucket=bucket, endpoint_url=proxy.url, access_key_id=TEST_AWS_KEY,
                             secret_access_key=TEST_AWS_SECRET)
        [fetched] = fetch_all(S3Module(source, ctx), tmp_path)
    finally:
        proxy.close()
    assert proxy.cuts == 1 and retries == [1]
    assert fetched.size == len(body) and fetched.sha256 == sha256(body)
    assert fetched.path.read_bytes() == body


def test_object_deleted_after_listing_is_skipped(s3_server: S3Server, admin: Any, bucket: str,
                                                 tmp_path: Path) -> None:
    put(admin, bucket, {"a.txt": b"a", "b.txt": b"b", "c.txt": b"c"})
    seen = []
    with capture_logs() as logs:
        for fetched in S3Module(source_for(s3_server, bucket), make_ctx()).fetch(tmp_path):
            seen.append(fetched.name)
            if fetched.name == "a.txt":  # the page is already listed: b.txt vanishes before its download
                admin.delete_object(Bucket=bucket, Key="b.txt")
    assert seen == ["a.txt", "c.txt"]
    assert not (tmp_path / "b.txt").exists()
    assert any(e["event"] == "file_vanished" and e["uri"].endswith("/b.txt") for e in logs)


# ---------------------------------------------------------------------- stopping


def test_stop_event_ends_fetch_at_a_file_boundary(s3_server: S3Server, admin: Any, bucket: str,
                                                  tmp_path: Path) -> None:
    put(admin, bucket, {f"{i}.txt": b"x" for i in range(5)})
    ctx = make_ctx()
    module = S3Module(source_for(s3_server, bucket), ctx)
    seen = []
    for fetched in module.fetch(tmp_path):
        seen.append(fetched)
        ctx.stop.set()
    assert [f.name for f in seen] == ["0.txt"]
    assert sorted(tmp_path.iterdir()) == [seen[0].path]


def test_stop_set_before_fetch_reads_nothing(s3_server: S3Server, admin: Any, bucket: str, tmp_path: Path) -> None:
    put(admin, bucket, {"a.txt": b"x"})
    ctx = make_ctx()
    ctx.stop.set()
    assert fetch_all(S3Module(source_for(s3_server, bucket), ctx), tmp_path) == []


# ---------------------------------------------------------------------- errors


def test_missing_bucket_is_a_permanent_source_error(s3_server: S3Server, tmp_path: Path) -> None:
    retries: list[int] = []
    ctx = make_ctx(counter=lambda: retries.append(1))
    name = f"missing-{uuid.uuid4().hex[:12]}"
    with pytest.raises(S3SourceError) as info:
        fetch_all(S3Module(source_for(s3_server, name), ctx), tmp_path)
    exc = info.value
    assert isinstance(exc, SourceError)
    assert not isinstance(exc, (S3TransientError, S3AuthError))
    assert not is_transient(exc)
    assert retries == []
    assert exc.bucket == name and exc.code == "NoSuchBucket"
    assert name in str(exc)


def test_nothing_listening_is_transient_after_retries(tmp_path: Path) -> None:
    retries: list[int] = []
    source = make_source(bucket="any", endpoint_url=f"http://127.0.0.1:{free_port()}",
                         access_key_id=TEST_AWS_KEY, secret_access_key=TEST_AWS_SECRET)
    with pytest.raises(S3TransientError) as info:
        fetch_all(S3Module(source, make_ctx(counter=lambda: retries.append(1))), tmp_path)
    assert is_transient(info.value)
    assert retries == [1]  # attempts=2: one retry, then the policy gave up
    assert info.value.__cause__ is not None


def test_errors_pickle_and_never_carry_secrets(s3_server: S3Server, tmp_path: Path) -> None:
    key_id, secret = "AKIDLEAKCHECK0000042", "leak-check-secret-value-0042"
    source = make_source(bucket=f"missing-{uuid.uuid4().hex[:12]}", endpoint_url=s3_server.url,
                         access_key_id=key_id, secret_access_key=secret)
    with capture_logs() as logs, pytest.raises(S3SourceError) as info:
        fetch_all(S3Module(source, make_ctx()), tmp_path)
    exc = info.value
    clone = pickle.loads(pickle.dumps(exc))
    assert type(clone) is type(exc) and str(clone) == str(exc) and clone.fields == exc.fields
    for text in (str(exc), repr(exc), repr(exc.fields), repr(logs), repr(source)):
        assert key_id not in text and secret not in text


def test_error_classes_pickle_with_their_marker() -> None:
    for cls in (S3SourceError, S3TransientError, S3AuthError):
        exc = cls("cannot read s3://b/k", bucket="b", key="k", code="X")
        clone = pickle.loads(pickle.dumps(exc))
        assert type(clone) is cls and clone.key == "k" and is_transient(clone) == (cls is S3TransientError)


# ---------------------------------------------------------------------- clients


def test_one_client_per_endpoint_region_and_credentials_in_a_run(s3_server: S3Server, bucket: str) -> None:
    run, other_run = RunResources(), RunResources()
    a = s3_client_for(source_for(s3_server, bucket), 10, run)
    b = s3_client_for(source_for(s3_server, "another-bucket", prefix="x/"), 10, run)
    c = s3_client_for(source_for(s3_server, bucket, region="eu-west-1"), 10, run)
    assert a is b
    assert a is not c
    assert s3_client_for(source_for(s3_server, bucket), 10, other_run) is not a, "no process-wide cache"
    run.close()
    other_run.close()


def test_jobs_in_threads_share_the_client(s3_server: S3Server, admin: Any, bucket: str, tmp_path: Path) -> None:
    put(admin, bucket, {f"t/{i}.txt": str(i).encode() * 1000 for i in range(4)})
    results: dict[int, list[str]] = {}
    resources = RunResources()

    def job(n: int) -> None:
        module = S3Module(source_for(s3_server, bucket), replace(make_ctx(), resources=resources))
        results[n] = [f.sha256 for f in fetch_all(module, tmp_path / str(n))]

    threads = [threading.Thread(target=job, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and len({tuple(v) for v in results.values()}) == 1
    assert results[0] == [sha256(str(i).encode() * 1000) for i in range(4)]


# ---------------------------------------------------------------------- validation


def test_fetched_files_validate_through_the_validator_set(s3_server: S3Server, admin: Any, bucket: str,
                                                          tmp_path: Path) -> None:
    lines = [{"id": 1, "amount": 2.5}, {"id": "two", "amount": 3}, {"id": 3, "amount": 1}]
    put(admin, bucket, {
        "in/good.json": json.dumps({"id": 1, "amount": 9.5}).encode(),
        "in/bad.json": json.dumps({"id": "x"}).encode(),
        "in/rows.jsonl": ("\n".join(json.dumps(r) for r in lines) + "\n").encode(),
        "in/notes.txt": b"not checked",
    })
    module = S3Module(source_for(s3_server, bucket, prefix="in/"), make_ctx(RECORD_SCHEMA))
    problems = {f.name: module.validate(f) for f in fetch_all(module, tmp_path)}

    assert problems["good.json"] == []
    assert problems["notes.txt"] is None  # no rule checks .txt: the service's on_unchecked decides
    bad = problems["bad.json"]
    assert {(p.location, p.message) for p in bad} == {
        ("$", "'amount' is a required property"), ("$.id", "'x' is not of type 'integer'")}
    [row] = problems["rows.jsonl"]
    assert row.location == "line 2: $.id"
    assert "'two' is not of type 'integer'" in row.message
