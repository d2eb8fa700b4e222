"""Incremental re-runs (``incremental: true``) and ``max_file_bytes``, through the CLI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import yaml

from tests.e2e.helpers import Project, list_keys

CSV = "id,amount\n1,2.5\n"


def test_incremental_ftp_rerun_downloads_only_what_changed(project: Project, s3, bucket: str,  # noqa: ANN001
                                                           ftp_server, ftp_dir: Path, ftp_root: Path) -> None:  # noqa: ANN001
    for i in range(5):
        (ftp_dir / f"f{i}.csv").write_text(CSV * (i + 1))
    project.write_ftp_registry(bucket, ftp_server, "/" + ftp_dir.relative_to(ftp_root).as_posix(), incremental=True)
    batch = project.write_batch([{"job_id": "nightly", "service_id": "sales"}])

    assert project.run("--batch-file", str(batch), "--report", "r1.json").returncode == 0
    assert project.report("r1.json")["jobs"][0]["files"]["uploaded"] == 5

    retr_before = ftp_server.commands.count("RETR")
    assert project.run("--batch-file", str(batch), "--report", "r2.json").returncode == 0
    files = project.report("r2.json")["jobs"][0]["files"]
    assert files["skipped_unchanged"] == 5 and files["uploaded"] == 0
    assert ftp_server.commands.count("RETR") == retr_before, "nothing downloaded when nothing changed"

    (ftp_dir / "f1.csv").write_text(CSV * 9)  # changed content and size
    late = ftp_dir / "late.csv"  # arrives late with an old timestamp: still picked up
    late.write_text(CSV)
    old = time.time() - 30 * 86400
    os.utime(late, (old, old))
    retr_before = ftp_server.commands.count("RETR")
    assert project.run("--batch-file", str(batch), "--report", "r3.json").returncode == 0
    files = project.report("r3.json")["jobs"][0]["files"]
    assert files == {"uploaded": 2, "skipped_same": 0, "skipped_unchanged": 4, "rejected": 0, "failed": 0}
    assert ftp_server.commands.count("RETR") == retr_before + 2
    body = s3.get_object(Bucket=bucket, Key="data/ftp/sales/validated/f1.csv")["Body"].read()
    assert body == (CSV * 9).encode()


def test_incremental_s3_rerun_skips_unchanged_objects(project: Project, s3, bucket: str) -> None:  # noqa: ANN001
    source = f"{bucket}-src"
    s3.create_bucket(Bucket=source)
    for i in range(3):
        s3.put_object(Bucket=source, Key=f"in/o{i}.txt", Body=f"object {i}".encode())
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}, "incremental": True},
        "services": {"vendor": {"type": "s3", "source": {"bucket": source, "prefix": "in/", "endpoint_url": "${S3_URL}"}}},
    })
    batch = project.write_batch([{"job_id": "nightly", "service_id": "vendor"}])
    assert project.run("--batch-file", str(batch), "--report", "r1.json").returncode == 0
    s3.put_object(Bucket=source, Key="in/o2.txt", Body=b"object 2, changed")
    assert project.run("--batch-file", str(batch), "--report", "r2.json").returncode == 0
    files = project.report("r2.json")["jobs"][0]["files"]
    assert files["skipped_unchanged"] == 2 and files["uploaded"] == 1
    assert s3.get_object(Bucket=bucket, Key="data/s3/vendor/validated/o2.txt")["Body"].read() == b"object 2, changed"


def test_dated_job_ids_share_the_service_state(project: Project, s3, bucket: str, ftp_server,  # noqa: ANN001
                                               ftp_dir: Path, ftp_root: Path) -> None:
    """Issue 13, item 4: the state is the service's, not the job id's: day two's job, a new id,
    fetches only what changed since day one; two jobs of the service in one run both add to it."""
    (ftp_dir / "main").mkdir()
    (ftp_dir / "other").mkdir()
    for i in range(4):
        (ftp_dir / "main" / f"f{i}.csv").write_text(CSV * (i + 1))
    (ftp_dir / "other" / "x.csv").write_text(CSV)
    folder = "/" + ftp_dir.relative_to(ftp_root).as_posix()
    project.write_ftp_registry(bucket, ftp_server, folder + "/main", incremental=True)
    day1 = project.write_batch([{"job_id": "partner_2026_11_22", "service_id": "sales"},
                                {"job_id": "other_2026_11_22", "service_id": "sales",
                                 "params": {"path": folder + "/other"}}], name="day1.json")
    assert project.run("--batch-file", str(day1), "--report", "r1.json").returncode == 0
    state = json.loads(s3.get_object(Bucket=bucket, Key="_state/sales/sales.json")["Body"].read())
    assert sorted(f["source_uri"].rsplit("/", 1)[-1] for f in state["files"]) == [
        "f0.csv", "f1.csv", "f2.csv", "f3.csv", "x.csv"], "both jobs' files, neither lost"

    (ftp_dir / "main" / "f1.csv").write_text(CSV * 9)
    (ftp_dir / "main" / "new.csv").write_text(CSV)
    retr_before = ftp_server.commands.count("RETR")
    day2 = project.write_batch([{"job_id": "partner_2026_11_23", "service_id": "sales"}], name="day2.json")
    assert project.run("--batch-file", str(day2), "--report", "r2.json").returncode == 0
    files = project.report("r2.json")["jobs"][0]["files"]
    assert files == {"uploaded": 2, "skipped_same": 0, "skipped_unchanged": 3, "rejected": 0, "failed": 0}
    assert ftp_server.commands.count("RETR") == retr_before + 2, "only the changed and the new file"
    state = json.loads(s3.get_object(Bucket=bucket, Key="_state/sales/sales.json")["Body"].read())
    assert len(state["files"]) == 6 and state["job_id"] == "partner_2026_11_23"


def test_files_over_max_file_bytes_are_refused(project: Project, s3, bucket: str, ftp_server,  # noqa: ANN001
                                               ftp_dir: Path, ftp_root: Path) -> None:
    (ftp_dir / "small.csv").write_text(CSV)
    (ftp_dir / "huge.csv").write_text(CSV * 100)
    project.write_ftp_registry(bucket, ftp_server, "/" + ftp_dir.relative_to(ftp_root).as_posix(), max_file_bytes=100)
    batch = project.write_batch([{"job_id": "j", "service_id": "sales"}])
    result = project.run("--batch-file", str(batch), "--report", "r.json")
    assert result.returncode == 1, "a refused file counts as rejected"
    job = project.report("r.json")["jobs"][0]
    assert job["status"] == "succeeded" and job["files"]["rejected"] == 1 and job["files"]["uploaded"] == 1
    assert list_keys(s3, bucket, "data/") == ["data/ftp/sales/validated/small.csv"]
    manifest = s3.get_object(Bucket=bucket, Key="_manifests/sales/j.json")["Body"].read().decode()
    assert "over max_file_bytes" in manifest


def test_ftp_filters_on_path_size_and_age(project: Project, s3, bucket: str, ftp_server,  # noqa: ANN001
                                          ftp_dir: Path, ftp_root: Path) -> None:
    """Issue 13, item 3, through the CLI: the engine filters the FTP listing (MLSD size and modify
    facts) by relative path, size and age; nothing filtered out is downloaded."""
    (ftp_dir / "keep").mkdir()
    (ftp_dir / "drop").mkdir()
    old = time.time() - 30 * 86400
    for name, body, when in [("keep/old.csv", CSV, old), ("keep/new.csv", CSV, None),
                             ("keep/huge.csv", CSV * 500, old), ("drop/old.csv", CSV, old)]:
        path = ftp_dir / name
        path.write_text(body)
        if when:
            os.utime(path, (when, when))
    folder = "/" + ftp_dir.relative_to(ftp_root).as_posix()
    registry = yaml.safe_load(project.write_ftp_registry(bucket, ftp_server, folder).read_text())
    registry["services"]["sales"]["source"].update(include=["keep/*"], max_size=1000, older_than="7d")
    project.write_registry(registry)
    batch = project.write_batch([{"job_id": "filtered", "service_id": "sales"}])
    retr_before = ftp_server.commands.count("RETR")
    result = project.run("--batch-file", str(batch), "--report", "r.json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert list_keys(s3, bucket, "data/") == ["data/ftp/sales/validated/keep/old.csv"]
    assert ftp_server.commands.count("RETR") == retr_before + 1


def test_s3_to_the_same_store_copies_server_side_and_lands_validated_bytes(project: Project, s3, s3_server,  # noqa: ANN001
                                                                         bucket: str) -> None:
    """An s3 source and an s3 destination on one endpoint, ``server_side_copy: true``: each
    object, valid or rejected, is copied by the store (CopyObject, no upload of its bytes) with
    our sha256 metadata; only the errors document and the manifest are uploaded."""
    from tests.servers.s3_proxy import S3Proxy

    source = f"{bucket}-src"
    s3.create_bucket(Bucket=source)
    for i in range(4):
        s3.put_object(Bucket=source, Key=f"in/o{i}.csv", Body=f"id,amount\n{i},1.5\n".encode())
    s3.put_object(Bucket=source, Key="in/bad.csv", Body=b"id,amount\nx,1.5\n")
    with S3Proxy(s3_server.url) as proxy:
        project.write_registry({
            "version": 1,
            "defaults": {"destination": {"bucket": bucket, "endpoint_url": proxy.url, "server_side_copy": True}},
            "services": {"vendor": {"type": "s3", "source": {"bucket": source, "prefix": "in/", "endpoint_url": proxy.url},
                                    "validate": {"csv": {"columns": ["id", "amount"],
                                                         "types": {"id": "int", "amount": "float"}}}}},
        })
        batch = project.write_batch([{"job_id": "nightly", "service_id": "vendor"}])
        assert project.run("--batch-file", str(batch), "--report", "r1.json").returncode == 1  # one rejected file
        copies = [r for r in proxy.requests if r.operation == "CopyObject"]
        puts = [r.key for r in proxy.requests if r.operation == "PutObject"]
    assert project.report("r1.json")["jobs"][0]["files"]["uploaded"] == 4
    assert sorted(r.key for r in copies) == ["data/s3/vendor/rejected/bad.csv",
                                             *(f"data/s3/vendor/validated/o{i}.csv" for i in range(4))]
    assert sorted(puts) == ["_manifests/vendor/nightly.json", "data/s3/vendor/rejected/bad.csv.errors.json"]
    for i in range(4):
        landed = s3.get_object(Bucket=bucket, Key=f"data/s3/vendor/validated/o{i}.csv")
        assert landed["Body"].read() == f"id,amount\n{i},1.5\n".encode() and "sha256" in landed["Metadata"]
