"""Keys through the CLI: distinct sources never share a key, stale copies go, every object is accounted for.

docs/KEYS.md states the rules these runs hold the product to (issue 10, items 1, 2, 4,
11, 16 and 20). Each test runs the CLI against the session moto server (and pyftpdlib
for FTP), then runs it again and checks that the re-run uploads nothing new.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from common.safe_names import key_name
from tests.e2e.helpers import Project, list_keys

PLUGIN_DIR = Path(__file__).parent / "plugins"
RETRY = {"attempts": 1, "backoff_s": 0.01, "max_backoff_s": 0.05}
SCHEMA = {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}}


def s3_registry(project: Project, bucket: str, services: dict[str, Any]) -> Path:
    (project.root / "schema.json").write_text(json.dumps(SCHEMA))
    return project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}, "retry": RETRY,
                     "timeout_s": 10},
        "services": services,
    })


def s3_service(source_bucket: str, prefix: str, **service: Any) -> dict[str, Any]:
    return {"type": "s3", "source": {"bucket": source_bucket, "prefix": prefix, "endpoint_url": "${S3_URL}"},
            **service}


def manifest(s3, bucket: str, service_id: str, job_id: str) -> dict[str, Any]:  # noqa: ANN001
    body = s3.get_object(Bucket=bucket, Key=f"_manifests/{service_id}/{job_id}.json")["Body"].read()
    return json.loads(body)


def by_uri(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["source_uri"]: f for f in document["files"]}


def body(s3, bucket: str, key: str) -> bytes:  # noqa: ANN001
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def statuses(document: dict[str, Any]) -> list[str]:
    return sorted(f["status"] for f in document["files"])


@pytest.fixture()
def source(s3) -> str:  # noqa: ANN001
    """A second bucket, the S3 source of a test."""
    name = f"src-{os.urandom(4).hex()}"
    s3.create_bucket(Bucket=name)
    return name


def put_all(s3, bucket: str, objects: dict[str, bytes]) -> None:  # noqa: ANN001
    for key, data in objects.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)


# ---------------------------------------------------------------------- item 1: names that collide


COLLIDING = {
    "in/./a/b.txt": b"dot segment", "in/a//b.txt": b"double slash", "in/a/b.txt": b"plain",
    "in/a\\b.txt": b"backslash", "in/a /b.txt": b"trailing space", "in/x\ty.txt": b"tab", "in/x_y.txt": b"underscore",
}


def test_names_that_sanitise_alike_land_under_distinct_stable_keys(project: Project, s3, bucket: str,  # noqa: ANN001
                                                                   source: str) -> None:
    put_all(s3, source, COLLIDING)
    s3_registry(project, bucket, {"drop": s3_service(source, "in/")})
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 0, result.stderr

    files = by_uri(manifest(s3, bucket, "drop", "j1"))
    assert len(files) == 7 and {f["status"] for f in files.values()} == {"uploaded"}
    keys = {uri: f["key"] for uri, f in files.items()}
    assert len(set(keys.values())) == 7, "seven sources, seven keys"
    prefix = "data/s3/drop/validated/"
    assert keys[f"s3://{source}/in/a/b.txt"] == prefix + "a/b.txt", "a name sanitising leaves alone keeps it"
    assert keys[f"s3://{source}/in/x_y.txt"] == prefix + "x_y.txt"
    assert keys[f"s3://{source}/in/x\ty.txt"] == prefix + key_name("x\ty.txt") == prefix + "x_y~c80694ff.txt"
    for uri, key in keys.items():
        assert body(s3, bucket, key) == COLLIDING[uri.split("/", 3)[3]]
    assert sorted(keys.values()) == list_keys(s3, bucket, prefix)

    again = project.run("--batch-file", str(batch))
    assert again.returncode == 0, again.stderr
    assert statuses(manifest(s3, bucket, "drop", "j1")) == ["skipped_same"] * 7
    assert sorted(keys.values()) == list_keys(s3, bucket, prefix)


def test_a_source_file_cannot_shadow_an_errors_document(project: Project, s3, bucket: str,  # noqa: ANN001
                                                        source: str) -> None:
    put_all(s3, source, {"in/a.json": b'{"id": "one"}', "in/a.json.errors.json": b'{"id": 7}',
                         "in/b.json ": b'{"id": "two"}'})  # checked as JSON: its name ends in spaces
    s3_registry(project, bucket, {"drop": s3_service(source, "in/", validate={"json_schema": "schema.json"})})
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    for run in range(2):
        result = project.run("--batch-file", str(batch))
        assert result.returncode == 1, result.stderr  # a rejected file: exit 1
        errors_doc = json.loads(body(s3, bucket, "data/s3/drop/rejected/a.json.errors.json"))
        assert errors_doc["source_uri"] == f"s3://{source}/in/a.json" and errors_doc["errors"]
        shadow = "data/s3/drop/validated/" + key_name("a.json.errors.json")
        assert shadow.startswith("data/s3/drop/validated/a.json.errors~") and not shadow.endswith(".errors.json")
        assert body(s3, bucket, shadow) == b'{"id": 7}'
        files = by_uri(manifest(s3, bucket, "drop", "j1"))
        assert files[f"s3://{source}/in/b.json "]["key"] == "data/s3/drop/rejected/" + key_name("b.json ")
        expected = ["rejected", "rejected", "uploaded" if run == 0 else "skipped_same"]
        assert sorted(f["status"] for f in files.values()) == expected


def test_a_prefix_without_a_slash_keeps_names_whole(project: Project, s3, bucket: str,  # noqa: ANN001
                                                    source: str) -> None:
    put_all(s3, source, {"data/x": b"in the folder", "datax": b"beside it", "other/x": b"not listed"})
    s3_registry(project, bucket, {"drop": s3_service(source, "data")})
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    for expected in ("uploaded", "skipped_same"):
        result = project.run("--batch-file", str(batch))
        assert result.returncode == 0, result.stderr
        assert list_keys(s3, bucket, "data/s3/") == ["data/s3/drop/validated/data/x", "data/s3/drop/validated/datax"]
        assert body(s3, bucket, "data/s3/drop/validated/data/x") == b"in the folder"
        assert statuses(manifest(s3, bucket, "drop", "j1")) == [expected] * 2


def test_ftp_names_differing_in_a_leading_space_land_apart(project: Project, s3, bucket: str,  # noqa: ANN001
                                                           ftp_server, ftp_dir: Path, ftp_root: Path) -> None:
    (ftp_dir / " lead.csv").write_bytes(b"id\n1\n")
    (ftp_dir / "lead.csv").write_bytes(b"id\n2\n")
    project.write_ftp_registry(bucket, ftp_server, "/" + ftp_dir.relative_to(ftp_root).as_posix(), retry=RETRY)
    batch = project.write_batch([{"job_id": "j1", "service_id": "sales"}])
    for expected in ("uploaded", "skipped_same"):
        result = project.run("--batch-file", str(batch))
        assert result.returncode == 0, result.stderr
        files = manifest(s3, bucket, "sales", "j1")["files"]
        assert [f["status"] for f in files] == [expected] * 2
        keys = {f["source_uri"].rsplit("/", 1)[1]: f["key"] for f in files}
        assert keys == {" lead.csv": "data/ftp/sales/validated/" + key_name(" lead.csv"),
                        "lead.csv": "data/ftp/sales/validated/lead.csv"}
        assert body(s3, bucket, keys[" lead.csv"]) == b"id\n1\n" and body(s3, bucket, keys["lead.csv"]) == b"id\n2\n"


# ---------------------------------------------------------------------- item 2: jobs of one service


@pytest.mark.parametrize("incremental", [False, True])
def test_a_second_job_cannot_overwrite_the_key_of_another(project: Project, s3, bucket: str,  # noqa: ANN001
                                                          source: str, incremental: bool) -> None:
    put_all(s3, source, {"east/sales.csv": b"id\n1\n", "west/sales.csv": b"id\n2\n", "west/only.csv": b"id\n3\n"})
    s3_registry(project, bucket, {"sales": s3_service(source, "east/", incremental=incremental)})
    batch = project.write_batch([{"job_id": "east", "service_id": "sales"},
                                 {"job_id": "west", "service_id": "sales", "params": {"prefix": "west/"}}])
    for run in range(2):
        result = project.run("--batch-file", str(batch), "--max-workers", "1", "--report", "report.json")
        assert result.returncode == 1, result.stderr
        jobs = {j["job_id"]: j for j in project.report()["jobs"]}
        assert jobs["east"]["status"] == "succeeded" and jobs["west"]["status"] == "failed"
        assert body(s3, bucket, "data/s3/sales/validated/sales.csv") == b"id\n1\n", "the first writer keeps it"
        east, west = manifest(s3, bucket, "sales", "east"), by_uri(manifest(s3, bucket, "sales", "west"))
        refused = west[f"s3://{source}/west/sales.csv"]
        assert refused["status"] == "failed" and refused["key"] is None
        reason = refused["errors"][0]["message"]
        assert "by job east" in reason and "{job_id}" in reason
        landed = "skipped_unchanged" if incremental else "skipped_same"
        assert west[f"s3://{source}/west/only.csv"]["status"] == ("uploaded" if run == 0 else landed)
        assert [f["status"] for f in east["files"]] == ["uploaded" if run == 0 else landed]
    assert list_keys(s3, bucket, "data/") == ["data/s3/sales/validated/only.csv", "data/s3/sales/validated/sales.csv"]


def test_jobs_with_their_own_prefix_both_land(project: Project, s3, bucket: str, source: str) -> None:  # noqa: ANN001
    put_all(s3, source, {"east/sales.csv": b"id\n1\n", "west/sales.csv": b"id\n2\n"})
    s3_registry(project, bucket, {"sales": s3_service(
        source, "east/", destination={"prefix": "data/s3/{service_id}/{job_id}/validated/"})})
    batch = project.write_batch([{"job_id": "east", "service_id": "sales"},
                                 {"job_id": "west", "service_id": "sales", "params": {"prefix": "west/"}}])
    for expected in ("uploaded", "skipped_same"):
        result = project.run("--batch-file", str(batch))
        assert result.returncode == 0, result.stderr
        assert body(s3, bucket, "data/s3/sales/east/validated/sales.csv") == b"id\n1\n"
        assert body(s3, bucket, "data/s3/sales/west/validated/sales.csv") == b"id\n2\n"
        assert statuses(manifest(s3, bucket, "sales", "west")) == [expected]


# ---------------------------------------------------------------------- item 4: stale copies


def test_validated_holds_only_the_last_valid_version_of_each_source(project: Project, s3, bucket: str,  # noqa: ANN001
                                                                    source: str) -> None:
    s3_registry(project, bucket, {"drop": s3_service(source, "in/", validate={"json_schema": "schema.json"})})
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    valid, rejected = "data/s3/drop/validated/", "data/s3/drop/rejected/"
    # not ours: no sha256 metadata, so never deleted even though its name is a rejected file's
    s3.put_object(Bucket=bucket, Key=valid + "foreign.json", Body=b"someone else's")

    def run(expected_code: int) -> list[str]:
        result = project.run("--batch-file", str(batch))
        assert result.returncode == expected_code, result.stderr
        return list_keys(s3, bucket, "data/")

    put_all(s3, source, {"in/r.json": b'{"id": 1}', "in/foreign.json": b'{"id": "x"}'})
    assert run(1) == [rejected + "foreign.json", rejected + "foreign.json.errors.json",
                      valid + "foreign.json", valid + "r.json"]
    put_all(s3, source, {"in/r.json": b'{"id": "now invalid"}'})
    after = [rejected + "foreign.json", rejected + "foreign.json.errors.json", rejected + "r.json",
             rejected + "r.json.errors.json", valid + "foreign.json"]
    assert run(1) == after, "the valid copy of r.json is gone once its rejected copy landed"
    assert run(1) == after
    assert statuses(manifest(s3, bucket, "drop", "j1")) == ["rejected", "rejected"]
    assert body(s3, bucket, valid + "foreign.json") == b"someone else's"
    put_all(s3, source, {"in/r.json": b'{"id": 2}'})
    assert run(1) == [rejected + "foreign.json", rejected + "foreign.json.errors.json", valid + "foreign.json",
                      valid + "r.json"], "valid again: the rejected copy and its errors document are gone"
    assert body(s3, bucket, valid + "r.json") == b'{"id": 2}'


# ---------------------------------------------------------------------- item 11: one bad name


def test_long_and_nested_names_fail_alone(project: Project, s3, bucket: str, source: str) -> None:  # noqa: ANN001
    long_segment = "in/" + "s" * 300 + ".txt"
    too_long = "in/" + "/".join(["L" * 199] * 5) + ".txt"  # 1,006 bytes: fine at the source, not under the prefix
    blank = "in/ "  # no usable segment once made safe
    objects = {long_segment: b"long", "in/m": b"a file", "in/m/x.txt": b"below it", too_long: b"x",
               "in/ok.txt": b"ok", blank: b"blank"}
    put_all(s3, source, objects)
    s3_registry(project, bucket, {"drop": s3_service(source, "in/")})
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    for expected in ("uploaded", "skipped_same"):
        result = project.run("--batch-file", str(batch))
        assert result.returncode == 1, result.stderr
        files = by_uri(manifest(s3, bucket, "drop", "j1"))
        failed = files.pop(f"s3://{source}/{too_long}")
        assert failed["status"] == "failed" and "over the 1024 an S3 key may have" in failed["errors"][0]["message"]
        failed = files.pop(f"s3://{source}/{blank}")
        assert failed["status"] == "failed" and "no usable path segment" in failed["errors"][0]["message"]
        assert {f["status"] for f in files.values()} == {expected} and len(files) == 4
        for uri, entry in files.items():
            assert body(s3, bucket, entry["key"]) == objects[uri.split("/", 3)[3]]
        assert {f["key"] for f in files.values()} == {"data/s3/drop/validated/" + k[3:] for k in objects
                                                      if k not in (too_long, blank)}


# ---------------------------------------------------------------------- items 20 and 16: a scripted plugin


def scripted_registry(project: Project, bucket: str, source: dict[str, Any], **service: Any) -> None:
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}, "retry": RETRY},
        "services": {"query": {"type": "scripted", "source": source, **service}},
    })


@pytest.mark.usefixtures("scripted")
def test_a_duplicate_source_uri_is_failed_and_every_landed_object_is_listed(project: Project, s3,  # noqa: ANN001
                                                                            bucket: str) -> None:
    scripted_registry(project, bucket, {"files": [
        {"name": "q1.csv", "uri": "db://sales/q1", "body": "id\n1\n"},
        {"name": "q1.jsonl", "uri": "db://sales/q1", "body": '{"id": 1}\n'},
        {"name": "q2.csv", "uri": "db://sales/q2", "body": "id\n2\n"},
    ]})
    batch = project.write_batch([{"job_id": "j1", "service_id": "query"}])
    for expected in ("uploaded", "skipped_same"):
        result = project.run("--batch-file", str(batch), "--report", "report.json")
        assert result.returncode == 1, result.stderr
        files = manifest(s3, bucket, "query", "j1")["files"]
        assert [(f["source_uri"], f["status"]) for f in files] == [
            ("db://sales/q1", expected), ("db://sales/q1", "failed"), ("db://sales/q2", expected)]
        assert "duplicate source_uri db://sales/q1" in files[1]["errors"][0]["message"]
        landed = sorted(f["key"] for f in files if f["key"])
        assert landed == list_keys(s3, bucket, "data/"), "every landed object has its entry"
        assert project.report()["jobs"][0]["files"]["failed"] == 1


@pytest.mark.usefixtures("scripted")
def test_a_fallback_that_delivers_everything_is_the_jobs_result(project: Project, s3,  # noqa: ANN001
                                                                bucket: str) -> None:
    primary = [{"name": "a.csv", "uri": "db://primary/a", "body": "id\n1\n"},
               {"name": "old.csv", "uri": "db://primary/old", "body": "id\n0\n"},
               {"name": "b.csv", "uri": "db://primary/b", "fail": True}]
    mirror = [{"name": "a.csv", "uri": "db://mirror/a", "body": "id\n1\n"},
              {"name": "b.csv", "uri": "db://mirror/b", "body": "id\n2\n"}]
    scripted_registry(project, bucket, {"files": primary, "then_fail": True},
                      fallback=[{"files": mirror, "then_fail": False}])
    batch = project.write_batch([{"job_id": "j1", "service_id": "query"}])
    for expected in ("uploaded", "skipped_same"):
        result = project.run("--batch-file", str(batch), "--report", "report.json")
        assert result.returncode == 0, result.stderr
        job = project.report()["jobs"][0]
        assert (job["status"], job["source_used"], job["files"]["failed"]) == ("succeeded", 0, 0)
        document = manifest(s3, bucket, "query", "j1")
        assert document["status"] == "succeeded" and document["source"] == {"files": mirror, "then_fail": False}
        # a.csv is what the primary landed a moment before: the same content, not uploaded again
        assert [(f["source_uri"], f["status"]) for f in document["files"]] == [
            ("db://mirror/a", "skipped_same"), ("db://mirror/b", expected)]
        # what the abandoned primary landed and the mirror's files do not account for
        assert [(f["source_uri"], f["key"], f["status"]) for f in document["abandoned"]] == [
            ("db://primary/old", "data/scripted/query/validated/old.csv", "uploaded" if expected == "uploaded"
             else "skipped_same")]
        assert list_keys(s3, bucket, "data/") == ["data/scripted/query/validated/a.csv",
                                                  "data/scripted/query/validated/b.csv",
                                                  "data/scripted/query/validated/old.csv"]


def test_one_prefix_for_valid_and_rejected_files_keeps_the_file_just_landed(project: Project, s3,  # noqa: ANN001
                                                                           bucket: str, source: str) -> None:
    s3_registry(project, bucket, {"drop": s3_service(source, "in/", validate={"json_schema": "schema.json"},
                                                     destination={"prefix": "all/", "rejected_prefix": "all/"})})
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    for data, code, keys in ((b'{"id": "x"}', 1, ["all/r.json", "all/r.json.errors.json"]),
                             (b'{"id": 1}', 0, ["all/r.json"])):
        put_all(s3, source, {"in/r.json": data})
        result = project.run("--batch-file", str(batch))
        assert result.returncode == code, result.stderr
        assert list_keys(s3, bucket, "all/") == keys and body(s3, bucket, "all/r.json") == data
