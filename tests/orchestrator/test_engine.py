"""The engine in process: ``run_batch`` (what the CLI runs) with real plugins and moto's S3.

``type: scripted_files`` (tests/e2e/plugins/scripted_files.py) is a FileSource whose listing
and downloads behave as each test says; ``type: scripted`` is a raw module. Both are installed
as a real distribution (entry points on ``sys.path``), and the files land in moto's S3 over
HTTP; only the subprocess is saved. These tests pin the engine's promises: parallel transfers
under the per-host cap with the manifest in listing order, per-file retries, the failure
cut-off, ``max_file_bytes`` on the listed size and while streaming, include/exclude,
incremental skips, vanished files, fatal errors, job retries and fallbacks, and a stop at a
file boundary with transfers in flight.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import common.plugins
from module_system.testing import TEST_AWS_KEY, TEST_AWS_SECRET
from orchestrator.cli_init import run_batch
from tests.e2e.helpers import PLUGIN_DIR, Project, install_test_plugins

RETRY = {"attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.05}


class Engine(Project):
    """A project whose runs are ``run_batch`` calls in this process."""

    def run_jobs(self, *args: str, monitor_duration: float = 0) -> int:
        batch = self.root / "jobs.json"
        return int(run_batch(batch, self.root / "project_registry.yaml", max_workers=4,
                             monitor_duration=monitor_duration, report=self.root / "report.json",
                             log_format="json", state_dir=self.root / "temp"))


@pytest.fixture()
def project(tmp_path: Path, s3_server, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engine]:
    for name in [k for k in os.environ if k.startswith(("AWS_", "MODULE_SYSTEM_"))]:
        monkeypatch.delenv(name)
    env = {"AWS_ACCESS_KEY_ID": TEST_AWS_KEY, "AWS_SECRET_ACCESS_KEY": TEST_AWS_SECRET,
           "AWS_DEFAULT_REGION": "us-east-1", "S3_URL": s3_server.url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    site = tmp_path / "site"
    install_test_plugins(site)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(PLUGIN_DIR))
    monkeypatch.setattr(common.plugins, "_default_catalog", None)  # a catalog that sees them
    monkeypatch.chdir(tmp_path)
    yield Engine(tmp_path, env)


def registry(project: Engine, bucket: str, files: list[dict[str, Any]], **service: Any) -> Path:
    """A ``files`` service over ``files``; returns the trace file its downloads write."""
    trace = project.root / "trace.jsonl"
    service.setdefault("retry", RETRY)
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"files": {"type": "scripted_files", "source": {"files": files, "trace": str(trace)},
                               **service}},
    })
    return trace


def run(project: Engine, expect: int, monitor_duration: float = 0) -> dict[str, Any]:
    project.write_batch([{"job_id": "j1", "service_id": "files"}])
    assert project.run_jobs(monitor_duration=monitor_duration) == expect
    job: dict[str, Any] = project.report()["jobs"][0]
    return job


def manifest(s3, bucket: str) -> list[dict[str, Any]]:
    body = s3.get_object(Bucket=bucket, Key="_manifests/files/j1.json")["Body"].read()
    files: list[dict[str, Any]] = json.loads(body)["files"]
    return files


def downloads(trace: Path) -> list[str]:
    """Names whose download started, in order (one per try)."""
    if not trace.exists():
        return []
    return [e["name"] for e in map(json.loads, trace.read_text().splitlines()) if e["event"] == "start"]


def peak_in_flight(trace: Path) -> int:
    events = sorted(map(json.loads, trace.read_text().splitlines()), key=lambda e: (e["t"], e["event"] == "start"))
    peak = now = 0
    for event in events:
        now += 1 if event["event"] == "start" else -1
        peak = max(peak, now)
    return peak


def test_transfers_run_side_by_side_under_the_host_cap_and_the_manifest_keeps_listing_order(
        project: Engine, s3, bucket: str) -> None:
    names = [f"f{i}.csv" for i in range(8)]
    # Earlier files take longer: they finish after later ones.
    files = [{"name": n, "body": f"id\n{i}\n", "delay_s": 0.4 - 0.04 * i} for i, n in enumerate(names)]
    trace = registry(project, bucket, files, transfers=6, limits={"max_connections": 3})
    job = run(project, 0)
    assert job["status"] == "succeeded" and job["files"]["uploaded"] == 8
    assert [f["source_uri"].rsplit("/", 1)[1] for f in manifest(s3, bucket)] == names
    assert peak_in_flight(trace) == 3, "transfers run side by side, never more than the host's cap"


def test_one_transfer_at_a_time_with_transfers_1(project: Engine, s3, bucket: str) -> None:
    files = [{"name": f"f{i}.csv", "body": "id\n1\n", "delay_s": 0.05} for i in range(4)]
    trace = registry(project, bucket, files, transfers=1)
    assert run(project, 0)["files"]["uploaded"] == 4
    assert peak_in_flight(trace) == 1


def test_a_transient_failure_is_retried_for_that_file_only(project: Engine, s3, bucket: str) -> None:
    files = [{"name": "a.csv", "body": "id\n1\n"},
             {"name": "b.csv", "body": "id\n2\n", "fail": "transient", "fail_times": 2},
             {"name": "c.csv", "body": "id\n3\n"}]
    trace = registry(project, bucket, files, transfers=2)
    job = run(project, 0)
    assert job["status"] == "succeeded" and job["attempts"] == 1 and job["files"]["uploaded"] == 3
    assert sorted(downloads(trace)) == ["a.csv", "b.csv", "b.csv", "b.csv", "c.csv"]


def test_files_failing_in_a_row_cut_the_source_off(project: Engine, s3, bucket: str) -> None:
    files = [{"name": "ok.csv", "body": "id\n1\n"}]
    files += [{"name": f"bad{i}.csv", "fail": "permanent"} for i in range(8)]
    trace = registry(project, bucket, files, transfers=1, retry={"attempts": 1, "backoff_s": 0.01})
    job = run(project, 1)
    assert job["status"] == "failed" and "5 files failed in a row" in job["error"], job["error"]
    assert downloads(trace) == ["ok.csv", *(f"bad{i}.csv" for i in range(5))], "nothing read after the cut-off"


def test_a_single_failed_file_fails_the_job_and_the_others_land(project: Engine, s3, bucket: str) -> None:
    files = [{"name": "a.csv", "body": "id\n1\n"}, {"name": "b.csv", "fail": "permanent"},
             {"name": "c.csv", "body": "id\n3\n"}]
    registry(project, bucket, files, transfers=3)
    job = run(project, 1)
    assert job["files"]["uploaded"] == 2 and job["files"]["failed"] == 1
    entries = manifest(s3, bucket)
    assert [e["status"] for e in entries] == ["uploaded", "failed", "uploaded"]
    assert "cannot be read" in entries[1]["errors"][0]["message"]


def test_max_file_bytes_rejects_by_the_listed_size_and_while_streaming(project: Engine, s3, bucket: str) -> None:
    files = [{"name": "listed-big.csv", "body": "x" * 500},
             {"name": "lying.csv", "body": "y" * 500, "size": 10},
             {"name": "unknown.csv", "body": "z" * 500, "size": None},
             {"name": "small.csv", "body": "id\n1\n"}]
    trace = registry(project, bucket, files, max_file_bytes=100)
    job = run(project, 1)
    assert job["files"]["rejected"] == 3 and job["files"]["uploaded"] == 1 and job["files"]["failed"] == 0
    assert [e["status"] for e in manifest(s3, bucket)] == ["rejected", "rejected", "rejected", "uploaded"]
    assert "listed-big.csv" not in downloads(trace), "a file listed over the limit is not downloaded"
    assert all("max_file_bytes" in e["errors"][0]["message"] for e in manifest(s3, bucket)[:3])


def test_include_and_exclude_come_from_the_template(project: Engine, s3, bucket: str) -> None:
    files = [{"name": n, "body": "id\n1\n"} for n in ("a.csv", "b.txt", "skip-c.csv", "sub/d.csv")]
    trace = project.root / "trace.jsonl"
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"files": {"type": "scripted_files", "retry": RETRY, "source": {
            "files": files, "trace": str(trace), "include": ["*.csv"], "exclude": ["skip-*"]}}},
    })
    run(project, 0)
    assert [e["source_uri"] for e in manifest(s3, bucket)] == ["scripted://files.test/a.csv",
                                                               "scripted://files.test/sub/d.csv"]
    assert sorted(downloads(trace)) == ["a.csv", "sub/d.csv"]


def test_incremental_skips_what_the_last_manifest_holds(project: Engine, s3, bucket: str) -> None:
    files = [{"name": "a.csv", "body": "id\n1\n"}, {"name": "b.csv", "body": "id\n2\n"}]
    trace = registry(project, bucket, files, incremental=True)
    run(project, 0)
    trace.unlink()
    files[1] = {"name": "b.csv", "body": "id\n2\n3\n", "etag": "v2"}
    registry(project, bucket, files, incremental=True)
    job = run(project, 0)
    assert [e["status"] for e in manifest(s3, bucket)] == ["skipped_unchanged", "uploaded"]
    assert downloads(trace) == ["b.csv"], "an unchanged file is not downloaded"
    assert job["files"]["uploaded"] == 1


def test_a_vanished_file_is_skipped_and_a_fatal_error_fails_the_source_at_once(
        project: Engine, s3, bucket: str) -> None:
    files = [{"name": "a.csv", "body": "id\n1\n"}, {"name": "gone.csv", "fail": "vanish"},
             {"name": "c.csv", "body": "id\n3\n"}]
    registry(project, bucket, files, transfers=1)
    job = run(project, 0)
    assert job["status"] == "succeeded" and job["files"]["uploaded"] == 2
    assert [e["source_uri"].rsplit("/", 1)[1] for e in manifest(s3, bucket)] == ["a.csv", "c.csv"]

    files = [{"name": "a.csv", "body": "id\n1\n"}, {"name": "b.csv", "fail": "fatal"}]
    files += [{"name": f"later{i}.csv", "body": "id\n1\n"} for i in range(5)]
    trace = registry(project, bucket, files, transfers=1, retry={"attempts": 1, "backoff_s": 0.01})
    trace.unlink(missing_ok=True)
    job = run(project, 1)
    assert job["status"] == "failed" and "login refused" in job["error"]
    assert downloads(trace) == ["a.csv", "b.csv"], "no file is tried after credentials were refused"


def test_a_raw_module_lands_in_parallel_and_records_in_the_order_it_yielded(
        project: Engine, s3, bucket: str) -> None:
    files = [{"name": f"r{i}.csv", "uri": f"db://t/{i}", "body": "id\n1\n" * (2000 - 200 * i)} for i in range(8)]
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"files": {"type": "scripted", "source": {"files": files}}},  # 8 landing lanes by default
    })
    job = run(project, 0)
    assert job["files"]["uploaded"] == 8
    assert [e["source_uri"] for e in manifest(s3, bucket)] == [f"db://t/{i}" for i in range(8)]


def test_a_raw_module_landing_locally_lands_as_it_yields_in_its_order(project: Engine) -> None:
    """Only local destinations: files are landed by the thread that receives them (no lanes)."""
    files = [{"name": f"r{i}.csv", "uri": f"db://t/{i}", "body": f"id\n{i}\n"} for i in range(30)]
    project.write_registry({"version": 1, "services": {"files": {
        "type": "scripted", "source": {"files": files}, "destination": {"type": "local", "path": "out"}}}})
    job = run(project, 0)
    assert job["files"]["uploaded"] == 30
    document = json.loads((project.root / "out" / "_manifests" / "files" / "j1.json").read_text())
    assert [e["source_uri"] for e in document["files"]] == [f"db://t/{i}" for i in range(30)]
    for entry in document["files"]:
        number = entry["source_uri"].rsplit("/", 1)[1]
        assert (project.root / "out" / entry["key"]).read_text() == f"id\n{number}\n"


def test_a_transient_listing_failure_retries_the_job_and_the_retry_lands_everything(
        project: Engine, s3, bucket: str) -> None:
    flag = project.root / "fail-once"
    flag.touch()
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"files": {"type": "scripted_files", "retry": RETRY, "source": {
            "files": [{"name": "a.csv", "body": "id\n1\n"}], "list_fail": "transient",
            "list_fail_flag": str(flag)}}},
    })
    job = run(project, 0)
    assert job["status"] == "succeeded" and job["attempts"] == 2 and job["files"]["uploaded"] == 1
    assert not flag.exists()


def test_a_failing_source_falls_back_and_the_fallback_is_the_result(project: Engine, s3, bucket: str) -> None:
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"files": {"type": "scripted_files", "retry": RETRY, "source": {
            "files": [{"name": "a.csv", "body": "id\n1\n"}], "list_fail": "permanent"},
            "fallback": [{"host": "mirror.test", "list_fail": None}]}},
    })
    job = run(project, 0)
    assert job["status"] == "succeeded" and job["source_used"] == 0
    assert [e["source_uri"] for e in manifest(s3, bucket)] == ["scripted://mirror.test/a.csv"]


def test_a_stop_with_transfers_in_flight_lands_whole_files_only(project: Engine, s3, bucket: str) -> None:
    files = [{"name": f"f{i:02d}.csv", "body": f"id\n{i}\n", "delay_s": 0.3} for i in range(40)]
    trace = registry(project, bucket, files, transfers=4)
    job = run(project, 1, monitor_duration=0.5)
    assert job["status"] == "timed_out"
    started = downloads(trace)
    assert 0 < len(started) < 40, "the stop came mid-run"
    entries = manifest(s3, bucket)
    landed = [e for e in entries if e["status"] == "uploaded"]
    assert landed, "files finished before the stop are landed and listed"
    assert all(e["status"] == "uploaded" for e in entries), "nothing half-done is recorded as a file"
    names = [e["source_uri"].rsplit("/", 1)[1] for e in entries]
    assert names == sorted(names), "in listing order"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="data/").get("Contents", []))
    assert keys == sorted(e["key"] for e in landed), "every object in the bucket is a whole, listed file"
    for entry in landed:
        number = int(entry["source_uri"].rsplit("/f", 1)[1].split(".")[0])
        assert s3.get_object(Bucket=bucket, Key=entry["key"])["Body"].read() == f"id\n{number}\n".encode()
