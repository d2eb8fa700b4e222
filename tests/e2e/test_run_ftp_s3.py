"""A batch over an FTP server and an S3 bucket, through the CLI, landing as INTERFACE section 5 says."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from module_system.testing import FtpServer
from tests.e2e.helpers import Project, list_keys

PASSWORD = "ftp-pw-Zq81-never-logged"
GOOD_CSV = "id,date,amount,name\n1,2026-11-01,12.50,alpha\n2,2026-11-02,7,beta\n"
BAD_CSV = "id,date,amount,name\n1,2026-11-01,12.50,alpha\nx,2026-13-01,seven,beta\n"
SCHEMA = {"type": "object", "required": ["id", "amount"],
          "properties": {"id": {"type": "integer"}, "amount": {"type": "number"}}}


@pytest.fixture(scope="module")
def ftp_server(ftp_root: Path) -> Iterator[FtpServer]:
    """This module's own FTP server, whose password the tests hunt for in every output."""
    with FtpServer(ftp_root, user="sales", password=PASSWORD) as server:
        yield server


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def landing(s3, bucket: str) -> str:  # noqa: ANN001
    return bucket


@pytest.fixture()
def vendor(s3) -> str:  # noqa: ANN001
    name = f"vendor-{time.monotonic_ns()}"
    s3.create_bucket(Bucket=name)
    objects = {
        "drop/a.json": json.dumps({"id": 1, "amount": 2.5}),
        "drop/nested/b.json": json.dumps({"id": 2, "amount": 3}),
        "drop/bad.json": json.dumps({"id": "one"}),
        "drop/lines.jsonl": '{"id": 1, "amount": 1}\n{"id": 2}\n',
        "drop/skip.txt": "not included",
    }
    for key, body in objects.items():
        s3.put_object(Bucket=name, Key=key, Body=body.encode())
    return name


@pytest.fixture()
def sales_dir(ftp_dir: Path) -> Path:
    (ftp_dir / "sub").mkdir()
    (ftp_dir / "good.csv").write_text(GOOD_CSV)
    (ftp_dir / "sub" / "good2.csv").write_text(GOOD_CSV.replace("alpha", "gamma"))
    (ftp_dir / "bad.csv").write_text(BAD_CSV)
    (ftp_dir / "notes.txt").write_text("excluded")
    return ftp_dir


def registry(project: Project, landing: str, vendor: str, ftp_server, ftp_path: str) -> dict[str, Any]:  # noqa: ANN001
    (project.root / "schema.json").write_text(json.dumps(SCHEMA))
    project.env.update({"FTP_PASSWORD": PASSWORD, "FTP_PORT": str(ftp_server.port)})
    ftp_server_user = ftp_server.user
    return {
        "version": 1,
        "defaults": {"destination": {"bucket": landing, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 10},
        "services": {
            "ftp_sales": {
                "type": "ftp",
                "source": {"host": "127.0.0.1", "port": "${FTP_PORT}", "user": ftp_server_user,
                           "password": "${FTP_PASSWORD}", "path": ftp_path, "include": ["*.csv"]},
                "validate": {"csv": {"columns": ["id", "date", "amount", "name"],
                                     "types": {"id": "int", "date": "date", "amount": "float"}}},
            },
            "s3_fin": {
                "type": "s3",
                "source": {"bucket": vendor, "prefix": "drop/", "endpoint_url": "${S3_URL}",
                           "include": ["*.json", "*.jsonl"]},
                "validate": {"json_schema": "schema.json"},
            },
        },
    }


def test_batch_over_ftp_and_s3_lands_as_specified(project: Project, s3, landing: str, vendor: str,  # noqa: ANN001
                                                   ftp_server, sales_dir: Path, ftp_root: Path) -> None:  # noqa: ANN001
    ftp_path = "/" + sales_dir.relative_to(ftp_root).as_posix()
    reg = registry(project, landing, vendor, ftp_server, ftp_path)
    reg["services"]["ftp_missing"] = {**reg["services"]["ftp_sales"],
                                      "source": {**reg["services"]["ftp_sales"]["source"], "path": "/does/not/exist"}}
    project.write_registry(reg)
    batch = project.write_batch([
        {"job_id": "ftp_1", "service_id": "ftp_sales"},
        {"job_id": "s3_1", "service_id": "s3_fin", "priority": 9},
        {"job_id": "ftp_missing_1", "service_id": "ftp_missing"},
    ])
    result = project.run("--batch-file", str(batch), "--report", "report.json", "--max-workers", "3")
    assert result.returncode == 1, result.stderr

    keys = list_keys(s3, landing)
    assert keys == sorted([
        "_manifests/ftp_missing/ftp_missing_1.json",
        "_manifests/ftp_sales/ftp_1.json",
        "_manifests/s3_fin/s3_1.json",
        "data/ftp/ftp_sales/rejected/bad.csv",
        "data/ftp/ftp_sales/rejected/bad.csv.errors.json",
        "data/ftp/ftp_sales/validated/good.csv",
        "data/ftp/ftp_sales/validated/sub/good2.csv",
        "data/s3/s3_fin/rejected/bad.json",
        "data/s3/s3_fin/rejected/bad.json.errors.json",
        "data/s3/s3_fin/rejected/lines.jsonl",
        "data/s3/s3_fin/rejected/lines.jsonl.errors.json",
        "data/s3/s3_fin/validated/a.json",
        "data/s3/s3_fin/validated/nested/b.json",
    ])
    # every data object carries its sha256, and the content matches it
    for key in keys:
        if key.startswith("data/") and not key.endswith(".errors.json"):
            obj = s3.get_object(Bucket=landing, Key=key)
            assert obj["Metadata"]["sha256"] == sha(obj["Body"].read()), key
    assert s3.get_object(Bucket=landing, Key="data/ftp/ftp_sales/validated/good.csv")["Body"].read() == GOOD_CSV.encode()

    errors = json.loads(s3.get_object(Bucket=landing, Key="data/ftp/ftp_sales/rejected/bad.csv.errors.json")["Body"].read())
    locations = [e["location"] for e in errors["errors"]]
    assert "row 3, column 'id'" in locations and "row 3, column 'date'" in locations
    lines_errors = json.loads(s3.get_object(Bucket=landing, Key="data/s3/s3_fin/rejected/lines.jsonl.errors.json")["Body"].read())
    assert lines_errors["errors"][0]["location"].startswith("line 2")

    manifest = json.loads(s3.get_object(Bucket=landing, Key="_manifests/ftp_sales/ftp_1.json")["Body"].read())
    assert {manifest[k] for k in ("job_id", "service_id", "status")} == {"ftp_1", "ftp_sales", "succeeded"}
    assert manifest["run_id"] and manifest["started_at"] and manifest["finished_at"]
    by_key = {f["key"]: f for f in manifest["files"]}
    good = by_key["data/ftp/ftp_sales/validated/good.csv"]
    assert good["status"] == "uploaded" and good["size"] == len(GOOD_CSV) and good["sha256"] == sha(GOOD_CSV.encode())
    assert good["source_uri"] == f"ftp://127.0.0.1:{ftp_server.port}{ftp_path}/good.csv"
    assert by_key["data/ftp/ftp_sales/rejected/bad.csv"]["status"] == "rejected"
    assert by_key["data/ftp/ftp_sales/rejected/bad.csv"]["errors"]
    assert "password" not in manifest["source"]

    report = project.report()
    jobs = {j["job_id"]: j for j in report["jobs"]}
    assert [j["job_id"] for j in report["jobs"]] == ["ftp_1", "s3_1", "ftp_missing_1"]
    assert jobs["ftp_1"]["status"] == "succeeded"
    assert jobs["ftp_1"]["files"] == {"uploaded": 2, "skipped_same": 0, "skipped_unchanged": 0, "rejected": 1, "failed": 0}
    assert jobs["ftp_1"]["source_used"] == "primary" and jobs["ftp_1"]["attempts"] == 1
    assert jobs["s3_1"]["files"] == {"uploaded": 2, "skipped_same": 0, "skipped_unchanged": 0, "rejected": 2, "failed": 0}
    assert jobs["ftp_missing_1"]["status"] == "failed" and "/does/not/exist" in jobs["ftp_missing_1"]["error"]
    assert report["exit_code"] == 1
    assert report["totals"]["jobs"] == {"succeeded": 2, "failed": 1, "timed_out": 0, "cancelled": 0}
    assert report["totals"]["files"]["rejected"] == 3

    # the failed-jobs file re-runs exactly the failed job
    failed_file = project.root / report["failed_jobs_file"]
    assert failed_file.name == f"failed_jobs_{report['run_id']}.json"
    assert [j["job_id"] for j in json.loads(failed_file.read_text())["jobs"]] == ["ftp_missing_1"]
    rerun_failed = project.run("--batch-file", str(failed_file), "--report", "report_failed.json")
    assert rerun_failed.returncode == 1
    assert [j["job_id"] for j in project.report("report_failed.json")["jobs"]] == ["ftp_missing_1"]

    # logs: the executor log and one JSON-lines file per job, every record bound
    log_dir = project.root / "temp" / "logs"
    assert (log_dir / "system_orchestrator_job_executor.log").exists()
    job_log = log_dir / "ftp_1_ftp_sales_ftp.log"
    records = [json.loads(line) for line in job_log.read_text().splitlines()]
    assert records and all(r["job_id"] == "ftp_1" for r in records)
    assert all({"run_id", "service_id", "module", "thread"} <= r.keys() for r in records)
    assert (log_dir / "s3_1_s3_fin_s3.log").exists()

    # no secret anywhere
    outputs = [result.stdout, result.stderr, rerun_failed.stdout, rerun_failed.stderr]
    outputs += [p.read_text() for p in project.root.rglob("*") if p.is_file() and p.suffix in (".log", ".json")]
    outputs += [s3.get_object(Bucket=landing, Key=k)["Body"].read().decode() for k in keys if k.endswith(".json")]
    assert not any(PASSWORD in text for text in outputs)

    # an identical re-run uploads nothing new
    before = {k: s3.head_object(Bucket=landing, Key=k)["LastModified"] for k in keys if k.startswith("data/")}
    rerun = project.run("--batch-file", str(batch), "--report", "report2.json")
    assert rerun.returncode == 1
    again = {j["job_id"]: j for j in project.report("report2.json")["jobs"]}
    assert again["ftp_1"]["files"] == {"uploaded": 0, "skipped_same": 2, "skipped_unchanged": 0, "rejected": 1, "failed": 0}
    assert again["s3_1"]["files"]["uploaded"] == 0 and again["s3_1"]["files"]["skipped_same"] == 2
    after = {k: s3.head_object(Bucket=landing, Key=k)["LastModified"] for k in before}
    assert after == before


def test_all_valid_batch_exits_0_with_console_script(project: Project, s3, landing: str, vendor: str,  # noqa: ANN001
                                                      ftp_server, ftp_dir: Path, ftp_root: Path) -> None:  # noqa: ANN001
    (ftp_dir / "only.csv").write_text(GOOD_CSV)
    reg = registry(project, landing, vendor, ftp_server, "/" + ftp_dir.relative_to(ftp_root).as_posix())
    project.write_registry(reg)
    batch = project.write_batch([{"job_id": "j1", "service_id": "ftp_sales"}])
    result = project.cli("run", "--batch-file", str(batch), "--log-format", "json")
    assert result.returncode == 0, result.stderr
    summary = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    job_line = next(s for s in summary if s.get("event") == "job_summary")
    assert job_line["job_id"] == "j1" and job_line["status"] == "succeeded" and job_line["files_ok"] == 1
    assert not list((project.root / "temp").glob("failed_jobs_*.json"))
    assert list_keys(s3, landing, "data/") == ["data/ftp/ftp_sales/validated/only.csv"]


def test_params_override_source_per_job(project: Project, s3, landing: str, vendor: str,  # noqa: ANN001
                                        ftp_server, ftp_dir: Path, ftp_root: Path) -> None:  # noqa: ANN001
    (ftp_dir / "one").mkdir()
    (ftp_dir / "two").mkdir()
    (ftp_dir / "one" / "x.csv").write_text(GOOD_CSV)
    (ftp_dir / "two" / "y.csv").write_text(GOOD_CSV)
    base = "/" + ftp_dir.relative_to(ftp_root).as_posix()
    project.write_registry(registry(project, landing, vendor, ftp_server, base + "/one"))
    batch = project.write_batch([{"job_id": "j2", "service_id": "ftp_sales", "params": {"path": base + "/two"}}])
    assert project.run("--batch-file", str(batch)).returncode == 0
    assert list_keys(s3, landing, "data/") == ["data/ftp/ftp_sales/validated/y.csv"]


def test_fallback_source_used_when_primary_fails(project: Project, s3, landing: str, vendor: str,  # noqa: ANN001
                                                 ftp_server, ftp_dir: Path, ftp_root: Path) -> None:  # noqa: ANN001
    (ftp_dir / "mirror").mkdir()
    (ftp_dir / "mirror" / "m.csv").write_text(GOOD_CSV)
    base = "/" + ftp_dir.relative_to(ftp_root).as_posix()
    reg = registry(project, landing, vendor, ftp_server, base + "/gone")
    reg["services"]["ftp_sales"]["fallback"] = [{"port": 1}, {"path": base + "/mirror"}]
    project.write_registry(reg)
    batch = project.write_batch([{"job_id": "fb", "service_id": "ftp_sales"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 0, result.stderr
    job = project.report()["jobs"][0]
    assert job["source_used"] == 1 and job["status"] == "succeeded"
    assert list_keys(s3, landing, "data/") == ["data/ftp/ftp_sales/validated/m.csv"]


def test_priority_order_and_monitor_duration(project: Project, s3, landing: str, vendor: str,  # noqa: ANN001
                                             ftp_server, ftp_dir: Path, ftp_root: Path) -> None:  # noqa: ANN001
    # Far more files than the run has time for (it stops after 1.5 s), also with the job's
    # transfers landing several files at once: the first job is still running at the deadline.
    for i in range(3000):
        (ftp_dir / f"f{i:04d}.csv").write_text(GOOD_CSV)
    project.write_registry(registry(project, landing, vendor, ftp_server, "/" + ftp_dir.relative_to(ftp_root).as_posix()))
    jobs = [{"job_id": f"low_{i}", "service_id": "ftp_sales", "priority": 2} for i in range(2)]
    jobs += [{"job_id": "high", "service_id": "ftp_sales", "priority": 9}]
    batch = project.write_batch(jobs)
    result = project.run("--batch-file", str(batch), "--report", "report.json", "--max-workers", "1",
                         "--monitor-duration", "1.5")
    assert result.returncode == 1, result.stderr
    report = project.report()
    statuses = {j["job_id"]: j for j in report["jobs"]}
    assert statuses["high"]["started_at"] is not None, "the highest priority job starts first"
    assert statuses["low_1"]["status"] == "timed_out" and statuses["low_1"]["started_at"] is None
    assert report["totals"]["jobs"]["timed_out"] >= 2
    failed = json.loads((project.root / report["failed_jobs_file"]).read_text())
    assert {j["job_id"] for j in failed["jobs"]} >= {"low_0", "low_1"}
    # nothing half-done under a final key: every landed object matches its sha256
    for key in list_keys(s3, landing, "data/"):
        obj = s3.get_object(Bucket=landing, Key=key)
        assert obj["Metadata"]["sha256"] == sha(obj["Body"].read())


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_stops_cleanly_with_exit_130(project: Project, s3, landing: str, vendor: str,  # noqa: ANN001
                                            ftp_server, ftp_dir: Path, ftp_root: Path) -> None:  # noqa: ANN001
    for i in range(1200):  # enough that j2 is still waiting when the signal comes, with parallel transfers too
        (ftp_dir / f"f{i:04d}.csv").write_text(GOOD_CSV)
    project.write_registry(registry(project, landing, vendor, ftp_server, "/" + ftp_dir.relative_to(ftp_root).as_posix()))
    batch = project.write_batch([{"job_id": f"j{i}", "service_id": "ftp_sales"} for i in range(3)])
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli_init", "--batch-file", str(batch),
                             "--report", "report.json", "--max-workers", "1"],
                            cwd=project.root, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    job_log = project.root / "temp" / "logs" / "j0_ftp_sales_ftp.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not job_log.exists() or "file_done" not in job_log.read_text()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    report = project.report()
    assert report["exit_code"] == 130
    assert {j["status"] for j in report["jobs"]} <= {"cancelled", "succeeded"}
    assert report["jobs"][2]["status"] == "cancelled"
    failed = json.loads((project.root / report["failed_jobs_file"]).read_text())
    assert "j2" in {j["job_id"] for j in failed["jobs"]}
    work = project.root / "temp" / "work"
    assert not work.exists() or not any(work.iterdir()), "temp dirs are removed"
