"""The built-in ``http`` source through the CLI, against a local file server with autoindex pages:
listed URLs and index pages to S3, incremental re-runs (HEAD and conditional GET), resume with
Range after a cut, a server without ranges, credentials refused, ``plan`` without a GET."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.helpers import Project, list_keys
from tests.servers.http_files import HttpFileServer

BIG = os.urandom(3 * 1024 * 1024 + 17)


@pytest.fixture()
def files() -> Iterator[HttpFileServer]:
    server = HttpFileServer({
        "feed/a.csv": b"id,name\n1,x\n",
        "feed/2026/b.csv": b"id,name\n2,y\n",
        "feed/2026/c d.json": b'{"ok": true}',
        "feed/big.bin": BIG,
        "other/report.php": b"%PDF-1.4 pretend",
    })
    server.disposition["other/report.php"] = 'attachment; filename="report-2026.pdf"'
    with server:
        yield server


def registry(project: Project, bucket: str, source: dict[str, Any], **service: Any) -> None:
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"vendor": {"type": "http", "source": source, **service}},
    })


def counts(report: dict[str, Any]) -> dict[str, int]:
    return {k: v for k, v in report["jobs"][0]["files"].items() if isinstance(v, int) and v}


def test_urls_and_a_recursive_index_land_in_s3(project: Project, s3: Any, bucket: str,
                                               files: HttpFileServer) -> None:
    registry(project, bucket, {"urls": [f"{files.url}/other/report.php"], "index": [f"{files.url}/feed/"],
                               "recursive": True})
    batch = project.write_batch([{"job_id": "j1", "service_id": "vendor"}])
    result = project.run("--batch-file", str(batch), "--report", "r.json")
    assert result.returncode == 0, result.stderr[-2000:]
    prefix = "data/http/vendor/validated/"
    assert list_keys(s3, bucket, "data/") == sorted(prefix + n for n in (
        "report-2026.pdf", "a.csv", "2026/b.csv", "2026/c d.json", "big.bin"))
    body = s3.get_object(Bucket=bucket, Key=prefix + "big.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(BIG).digest()
    # The autoindex noise (../, ?C=N;O=D, another host) was never requested.
    assert not any(path.endswith("/other/") or "elsewhere" in path for _, path, _ in files.requests)
    assert counts(project.report("r.json")) == {"uploaded": 5}


def test_incremental_rerun_heads_only_and_fetches_what_changed(project: Project, s3: Any, bucket: str,
                                                               files: HttpFileServer) -> None:
    registry(project, bucket, {"index": [f"{files.url}/feed/"], "recursive": True}, incremental=True)
    batch = project.write_batch([{"job_id": "day_2026_12_03", "service_id": "vendor"}])
    assert project.run("--batch-file", str(batch), "--report", "r1.json").returncode == 0
    files.gets.clear()
    files.put("feed/a.csv", b"id,name\n1,changed\n")
    batch2 = project.write_batch([{"job_id": "day_2026_12_04", "service_id": "vendor"}], name="jobs2.json")
    result = project.run("--batch-file", str(batch2), "--report", "r2.json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert counts(project.report("r2.json")) == {"uploaded": 1, "skipped_unchanged": 3}
    assert {p for p in files.gets if not p.endswith("/")} == {"/feed/a.csv"}  # the others: HEAD only


def test_without_head_an_unchanged_file_answers_304(project: Project, s3: Any, bucket: str,
                                                    files: HttpFileServer) -> None:
    registry(project, bucket, {"urls": [f"{files.url}/feed/a.csv", f"{files.url}/feed/big.bin"], "head": False},
             incremental=True)
    batch = project.write_batch([{"job_id": "j1", "service_id": "vendor"}])
    assert project.run("--batch-file", str(batch), "--report", "r1.json").returncode == 0
    sent = files.bytes_sent
    result = project.run("--batch-file", str(batch), "--report", "r2.json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert counts(project.report("r2.json")) == {"skipped_unchanged": 2}
    assert files.bytes_sent == sent and files.heads.total() == 0
    conditional = [h for m, p, h in files.requests if m == "GET"][-2:]
    assert all("If-None-Match" in h for h in conditional)


def test_a_cut_download_resumes_with_range(project: Project, s3: Any, bucket: str,
                                           files: HttpFileServer) -> None:
    files.cut_once["feed/big.bin"] = 1024 * 1024
    registry(project, bucket, {"urls": [f"{files.url}/feed/big.bin"]})
    batch = project.write_batch([{"job_id": "j1", "service_id": "vendor"}])
    result = project.run("--batch-file", str(batch), "--report", "r.json")
    assert result.returncode == 0, result.stderr[-2000:]
    body = s3.get_object(Bucket=bucket, Key="data/http/vendor/validated/big.bin")["Body"].read()
    assert body == BIG
    assert len(files.ranges) == 1 and files.ranges[0].startswith("bytes=") and files.ranges[0] != "bytes=0-"
    assert files.bytes_sent == len(BIG)  # resumed, not sent twice


def test_a_server_without_ranges_sends_the_file_again(project: Project, s3: Any, bucket: str,
                                                       files: HttpFileServer) -> None:
    files.cut_once["feed/big.bin"] = 1024 * 1024
    files.no_ranges = True
    registry(project, bucket, {"urls": [f"{files.url}/feed/big.bin"]})
    batch = project.write_batch([{"job_id": "j1", "service_id": "vendor"}])
    assert project.run("--batch-file", str(batch)).returncode == 0
    body = s3.get_object(Bucket=bucket, Key="data/http/vendor/validated/big.bin")["Body"].read()
    assert body == BIG and files.bytes_sent == len(BIG) + 1024 * 1024


def test_credentials_go_in_headers_and_a_refusal_fails_the_source(project: Project, s3: Any, bucket: str,
                                                                  files: HttpFileServer) -> None:
    files.auth = "Bearer s3cr3t-token-value"
    project.env["VENDOR_TOKEN"] = "Bearer s3cr3t-token-value"
    registry(project, bucket, {"index": [f"{files.url}/feed/"], "headers": {"Authorization": "${VENDOR_TOKEN}"}})
    batch = project.write_batch([{"job_id": "j1", "service_id": "vendor"}])
    assert project.run("--batch-file", str(batch)).returncode == 0
    assert len(list_keys(s3, bucket, "data/")) == 2  # a.csv, big.bin (not recursive)
    project.env["VENDOR_TOKEN"] = "Bearer wrong-token-value"
    result = project.run("--batch-file", str(batch), "--report", "r.json")
    assert result.returncode == 1
    job = project.report("r.json")["jobs"][0]
    assert job["status"] == "failed" and "401" in json.dumps(job)


def test_plan_lists_sizes_from_head_and_gets_nothing(project: Project, s3: Any, bucket: str,
                                                     files: HttpFileServer) -> None:
    registry(project, bucket, {"index": [f"{files.url}/feed/"], "recursive": True, "max_size": 1_000_000})
    batch = project.write_batch([{"job_id": "j1", "service_id": "vendor"}])
    result = project.cli("plan", "--batch-file", str(batch), "--format", "json")
    assert result.returncode == 0, result.stderr[-2000:]
    plan = json.loads(result.stdout)
    assert {p for p in files.gets if not p.endswith("/")} == set()  # index pages only
    assert files.heads.total() == 4
    text = json.dumps(plan)
    assert "big.bin" in text and "filtered" in text


def test_check_tells_reachable_auth_failed_and_missing(project: Project, s3: Any, bucket: str,
                                                       files: HttpFileServer) -> None:
    files.auth = "Bearer s3cr3t-token-value"
    project.env["VENDOR_TOKEN"] = "Bearer s3cr3t-token-value"
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {
            "good": {"type": "http", "source": {"urls": [f"{files.url}/feed/a.csv"],
                                                "headers": {"Authorization": "${VENDOR_TOKEN}"}}},
            "refused": {"type": "http", "source": {"urls": [f"{files.url}/feed/a.csv"]}},
            "gone": {"type": "http", "source": {"index": [f"{files.url}/nothing-here/"],
                                                "headers": {"Authorization": "${VENDOR_TOKEN}"}}},
        },
    })
    result = project.cli("check", "--format", "json")
    assert result.returncode == 1, result.stderr[-2000:]
    verdicts = {c["service_id"]: c["source"] for c in json.loads(result.stdout)["services"]}
    assert verdicts == {"good": "reachable", "refused": "auth_failed", "gone": "missing"}
    assert files.gets.total() == 1  # the index page of "gone"; files are only HEADed


def test_a_source_without_urls_or_index_is_a_config_error(project: Project, bucket: str) -> None:
    registry(project, bucket, {"recursive": True})
    batch = project.write_batch([{"job_id": "j1", "service_id": "vendor"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: project_registry.yaml: service 'vendor': key 'source': needs one of urls or index"]
