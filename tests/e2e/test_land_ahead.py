"""Large files land ahead of their verdict: the multipart upload runs while the file is validated.

Through the CLI. A ``localdir`` job of two CSV files above the S3 destination's multipart
threshold, one valid and one whose last row is not: both uploads start before their verdict
(``multipart_created``); the valid file's is completed under ``validated/``, the invalid
file's is withdrawn (aborted, ``multipart_withdrawn``) and the file lands under ``rejected/``
with its errors, as it would without the overlap. Nothing else is left: no object under the
valid key of the invalid file, no upload in progress, no upload state. And when another job
holds the key, the upload that went ahead is withdrawn the same way.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tests.e2e.helpers import Project, list_keys

ROWS = 700_000  # ~8 MiB of "id,amount" rows: two 5 MiB parts


def write_csv(path: Path, last: str) -> str:
    lines = ["id,amount\n", *(f"{i},{i}.5\n" for i in range(ROWS)), last]
    data = "".join(lines).encode()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def events(logs: Path) -> list[dict[str, Any]]:
    """The run's log events, once each (the job's log and the run's both hold a job's events)."""
    lines = {line for path in logs.glob("*.log") for line in path.read_text().splitlines()}
    return [json.loads(line) for line in sorted(lines)]


def test_a_large_file_uploads_while_validated_and_an_invalid_one_is_withdrawn(
        project: Project, s3, s3_server, bucket: str, tmp_path: Path) -> None:
    folder = tmp_path / "source"
    folder.mkdir()
    good = write_csv(folder / "good.csv", "700000,1.0\n")
    write_csv(folder / "bad.csv", "700000,not-a-number\n")
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}",
                                     "multipart_threshold_mb": 5, "multipart_chunksize_mb": 5}},
        "services": {"files": {"type": "localdir", "source": {"path": str(folder)},
                               "validate": {"csv": {"columns": ["id", "amount"],
                                                    "types": {"id": "int", "amount": "float"}}}}},
    })
    project.write_batch([{"job_id": "big", "service_id": "files"}])
    result = project.run("--batch-file", "jobs.json", "--registry", "project_registry.yaml",
                         "--log-format", "json", "--log-dir", "logs", "--report", "report.json")
    assert result.returncode == 1, result.stderr[-3000:]  # 1: a file was rejected
    files = project.report()["jobs"][0]["files"]
    assert (files["uploaded"], files["rejected"], files["failed"]) == (1, 1, 0)

    keys = list_keys(s3, bucket, "data/")
    valid = [k for k in keys if "/validated/" in k]
    rejected = [k for k in keys if "/rejected/" in k]
    assert [k.rsplit("/", 1)[1] for k in valid] == ["good.csv"], keys
    assert sorted(k.rsplit("/", 1)[1] for k in rejected) == ["bad.csv", "bad.csv.errors.json"]
    body = s3.get_object(Bucket=bucket, Key=valid[0])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == good
    errors = json.loads(s3.get_object(Bucket=bucket, Key=next(k for k in rejected if k.endswith(".json")))["Body"]
                        .read())
    assert "not a valid float" in json.dumps(errors["errors"])

    log = events(project.root / "logs")
    created = {e["key"].rsplit("/", 1)[1] for e in log if e["event"] == "multipart_created"}
    withdrawn = [e["key"] for e in log if e["event"] == "multipart_withdrawn"]
    assert {"good.csv", "bad.csv"} <= created, "both uploads started before their verdict"
    assert len(withdrawn) == 1 and withdrawn[0].endswith("/validated/bad.csv")
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], "no upload left in progress"
    assert list((project.root / "temp").rglob("uploads/*.json")) == [], "no upload state left"


def test_a_key_another_job_holds_withdraws_the_upload_that_went_ahead(
        project: Project, s3, s3_server, bucket: str, tmp_path: Path) -> None:
    """Two jobs land a valid ``big.csv`` under one key: the first to claim it lands it; the
    other's upload, which went ahead of the claim, is withdrawn and the file recorded failed."""
    digests = {}
    for job, last in (("one", "700000,1.0\n"), ("two", "700000,2.0\n")):
        (tmp_path / job).mkdir()
        digests[job] = write_csv(tmp_path / job / "big.csv", last)
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}",
                                     "multipart_threshold_mb": 5, "multipart_chunksize_mb": 5}},
        "services": {"files": {"type": "localdir", "source": {"path": str(tmp_path / "one")},
                               "validate": {"csv": {"columns": ["id", "amount"],
                                                    "types": {"id": "int", "amount": "float"}}}}},
    })
    project.write_batch([{"job_id": job, "service_id": "files", "params": {"path": str(tmp_path / job)}}
                         for job in ("one", "two")])
    result = project.run("--batch-file", "jobs.json", "--registry", "project_registry.yaml", "--max-workers", "2",
                         "--log-format", "json", "--log-dir", "logs", "--report", "report.json")
    assert result.returncode == 1, result.stderr[-3000:]  # the refused job failed
    jobs = {j["job_id"]: j for j in project.report()["jobs"]}
    winner = next(job for job, j in jobs.items() if j["status"] == "succeeded")
    loser = "two" if winner == "one" else "one"
    assert (jobs[winner]["files"]["uploaded"], jobs[loser]["files"]["failed"]) == (1, 1)

    key = "data/localdir/files/validated/big.csv"
    assert list_keys(s3, bucket, "data/") == [key]
    assert hashlib.sha256(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest() == digests[winner]
    log = events(project.root / "logs")
    assert [e["key"] for e in log if e["event"] == "multipart_withdrawn"] == [key], "the loser's upload went ahead"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], "no upload left in progress"
    assert list((project.root / "temp").rglob("uploads/*.json")) == [], "no upload state left"
