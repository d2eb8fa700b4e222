"""``--executor dask://HOST:PORT`` and ``dask-local`` through the CLI, on a real Dask cluster
(a ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1): the same S3 contents,
manifests, report and job logs as ``--executor threads``; a worker killed mid-run loses and
duplicates nothing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from module_system.testing import FtpServer
from tests.e2e.dask_cluster import DaskCluster
from tests.e2e.helpers import Project, assert_no_secrets, list_keys
from tests.servers.api_server import ApiRequest, ApiServer, json_reply

FTP_PASSWORD = "ftp-pw-Dk41-never-shipped"
API_TOKEN = "api-tok-Dk42-never-shipped"
CSV = "id,date,amount,name\n1,2026-11-01,12.50,alpha\n2,2026-11-02,7,beta\n"
BAD_CSV = "id,date,amount,name\nx,2026-13-01,seven,beta\n"
TIMING_KEYS = {"run_id", "started_at", "finished_at", "seconds", "failed_jobs_file"}


@pytest.fixture(scope="module")
def ftp_server(ftp_root: Path) -> Iterator[FtpServer]:
    with FtpServer(ftp_root, user="sales", password=FTP_PASSWORD) as server:
        yield server


def city(req: ApiRequest) -> Any:
    name = req.query.get("city", "")
    if req.headers.get("authorization") != f"Bearer {API_TOKEN}":
        return json_reply({"error": "no token"}, 401)
    return json_reply({"data": [{"city": name, "temp": len(name)}]})


@pytest.fixture()
def api() -> Iterator[ApiServer]:
    with ApiServer(latency_s=0.05) as server:  # slow enough for requests to overlap where they may
        server.route("/v1/weather", city)
        yield server


@pytest.fixture()
def sources(s3: Any, ftp_dir: Path, ftp_root: Path) -> dict[str, str]:
    """Files on the FTP server and in a vendor bucket; returns the FTP path and the vendor bucket."""
    for i in range(6):
        (ftp_dir / f"sales_{i}.csv").write_text(CSV.replace("alpha", f"alpha{i}"))
    (ftp_dir / "bad.csv").write_text(BAD_CSV)
    vendor = f"vendor-{time.monotonic_ns()}"
    s3.create_bucket(Bucket=vendor)
    for i in range(5):
        s3.put_object(Bucket=vendor, Key=f"drop/r{i}.json", Body=json.dumps({"id": i, "amount": i / 2}).encode())
    s3.put_object(Bucket=vendor, Key="drop/bad.json", Body=b'{"id": "one"}')
    return {"ftp_path": "/" + ftp_dir.relative_to(ftp_root).as_posix(), "vendor": vendor}


def mixed_registry(project: Project, ftp_server: FtpServer, api: ApiServer, sources: dict[str, str]) -> None:
    (project.root / "schema.json").write_text(json.dumps(
        {"type": "object", "required": ["id", "amount"],
         "properties": {"id": {"type": "integer"}, "amount": {"type": "number"}}}))
    project.env.update({"FTP_PASSWORD": FTP_PASSWORD, "FTP_PORT": str(ftp_server.port), "API_URL": api.url,
                        "WEATHER_TOKEN": API_TOKEN})
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": "${LANDING}", "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 20},
        "services": {
            "ftp_sales": {"type": "ftp", "source": {
                "host": "127.0.0.1", "port": "${FTP_PORT}", "user": "sales", "password": "${FTP_PASSWORD}",
                "path": sources["ftp_path"], "include": ["*.csv"]},
                "validate": {"csv": {"columns": ["id", "date", "amount", "name"],
                                     "types": {"id": "int", "date": "date", "amount": "float"}}}},
            "s3_fin": {"type": "s3", "source": {"bucket": sources["vendor"], "prefix": "drop/",
                                                "endpoint_url": "${S3_URL}"},
                       "validate": {"json_schema": "schema.json"}},
            "api_weather": {"type": "api", "source": {
                "base_url": "${API_URL}", "endpoints": [f"/v1/weather?city=c{i}" for i in range(4)],
                "auth": {"type": "bearer", "token": "${WEATHER_TOKEN}"}, "records_path": "data"},
                "limits": {"max_connections": 1}},
        },
    })


MIXED_JOBS = [{"job_id": "ftp_1", "service_id": "ftp_sales"},
              {"job_id": "s3_1", "service_id": "s3_fin", "priority": 9},
              {"job_id": "api_1", "service_id": "api_weather"},
              {"job_id": "api_2", "service_id": "api_weather", "params": {"endpoints": ["/v1/weather?city=x"]},
               "priority": 2}]


def without_timings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def landed(s3: Any, bucket: str) -> dict[str, Any]:
    """Every object of ``bucket``: a manifest's JSON without its timings (files by source URI),
    else its bytes and sha256 metadata."""
    out: dict[str, Any] = {}
    for key in list_keys(s3, bucket):
        obj = s3.get_object(Bucket=bucket, Key=key)
        body = obj["Body"].read()
        if key.startswith("_manifests/"):
            manifest = without_timings(json.loads(body))
            manifest["files"].sort(key=lambda f: f["source_uri"])  # parallel transfers finish in any order
            out[key] = manifest
        else:
            out[key] = (body, obj["Metadata"].get("sha256"))
    return out


def job_log_events(project: Project) -> dict[str, tuple[set[str], Counter[str]]]:
    """Each job log file of the run (in the client's log dir): the events it holds, and how many of
    each job and file event (connections made depend on which pool thread a file meets)."""
    logs = {}
    for path in sorted((project.root / "temp" / "logs").glob("*_*.log")):
        if path.name.startswith("system_"):
            continue
        events = [json.loads(line)["event"] for line in path.read_text().splitlines()]
        logs[path.name] = (set(events), Counter(e for e in events if e.startswith(("job_", "file_"))))
    return logs


def run_with(project: Project, s3: Any, executor: str, name: str) -> tuple[dict[str, Any], dict[str, Any],
                                                                         dict[str, Any]]:
    bucket = f"land-{name}-{time.monotonic_ns()}"
    s3.create_bucket(Bucket=bucket)
    project.env["LANDING"] = bucket
    for old in (project.root / "temp" / "logs").glob("*.log"):
        old.unlink()
    batch = project.write_batch(MIXED_JOBS)
    result = project.run("--batch-file", str(batch), "--report", f"report_{name}.json", "--max-workers", "4",
                         "--executor", executor, timeout=240)
    assert result.returncode == 1, result.stderr  # rejected files: exit 1, every job succeeded
    report = project.report(f"report_{name}.json")
    assert {j["status"] for j in report["jobs"]} == {"succeeded"}, report
    return landed(s3, bucket), without_timings(report), job_log_events(project)


def test_a_mixed_batch_on_a_dask_cluster_lands_as_with_threads(project: Project, s3: Any, ftp_server: FtpServer,
                                                               api: ApiServer, sources: dict[str, str],
                                                               tmp_path: Path) -> None:
    mixed_registry(project, ftp_server, api, sources)
    threads = run_with(project, s3, "threads", "threads")
    with DaskCluster(tmp_path / "dask", dict(project.env)) as cluster:
        on_dask = run_with(project, s3, cluster.url(), "dask")
    objects, report, logs = on_dask
    for key in threads[0]:
        assert objects.get(key) == threads[0][key], key
    assert objects == threads[0]
    assert report == threads[1]
    assert report["totals"]["files"]["uploaded"] == 6 + 5 + 5 and report["totals"]["files"]["rejected"] == 2
    assert logs == threads[2]  # every job's log, with the same records, in the client's log dir
    assert logs["ftp_1_ftp_sales_ftp.log"][1]["job_finished"] == 1
    run_log = (project.root / "temp" / "logs" / "system_orchestrator_job_executor.log").read_text()
    workers = {json.loads(line).get("worker") for line in run_log.splitlines()} - {None}
    assert len(workers) == 2, "both workers ran jobs"
    worker_files = [p for p in (tmp_path / "dask").rglob("*") if p.is_file()]
    assert any(p.name == "ftp_1_ftp_sales_ftp.log" for p in worker_files), "per-job logs are written where jobs run"
    assert_no_secrets(project.secrets(), {}, worker_files)
    # api_weather's limits.max_connections: 1 held across the client's admission and both workers
    assert api.peak_in_flight == 1 and len(api.requests) == 2 * 5


def test_dask_local_runs_the_batch(project: Project, s3: Any, ftp_server: FtpServer, api: ApiServer,
                                   sources: dict[str, str]) -> None:
    mixed_registry(project, ftp_server, api, sources)
    project.env["MODULE_SYSTEM_DASK_WORKERS"] = "2"
    threads = run_with(project, s3, "threads", "threads")
    objects, report, logs = run_with(project, s3, "dask-local", "local")
    assert (objects, report, logs) == threads


def slow_item(req: ApiRequest) -> Any:
    return json_reply({"data": [{"id": req.target, "n": req.count}]})


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(project: Project, s3: Any, bucket: str,
                                                              tmp_path: Path) -> None:
    """Jobs are slow because the API answers slowly (0.15 s a request); one worker is SIGKILLed once
    it has landed files of a job: its jobs run again on the other worker, the batch completes, each
    file is in its manifest once and counted once."""
    jobs, per_job = 6, 12
    with ApiServer(latency_s=0.15) as api:
        api.route("/items", slow_item)
        project.env["API_URL"] = api.url
        project.write_registry({
            "version": 1,
            "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}, "timeout_s": 20},
            "services": {"slow": {"type": "api", "source": {"base_url": "${API_URL}",
                                                            "endpoints": ["/items?i=0"], "records_path": "data"},
                                  "destination": {"prefix": "data/api/slow/{job_id}/"}}},
        })
        batch = project.write_batch([
            {"job_id": f"job_{j}", "service_id": "slow",
             "params": {"endpoints": [f"/items?job={j}&i={i}" for i in range(per_job)]}} for j in range(jobs)])
        with DaskCluster(tmp_path / "dask", dict(project.env)) as cluster:
            names = cluster.worker_addresses()
            victim = names["w0"]
            run_log = project.root / "temp" / "logs" / "system_orchestrator_job_executor.log"
            killed = threading.Event()

            def kill_when_busy() -> None:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    if run_log.exists():
                        uploaded = [json.loads(line) for line in run_log.read_text().splitlines()
                                    if '"file_done"' in line]
                        if sum(1 for r in uploaded if r.get("worker") == victim) >= 3:
                            cluster.kill_worker(0)
                            killed.set()
                            return
                    time.sleep(0.05)

            killer = threading.Thread(target=kill_when_busy, daemon=True)
            killer.start()
            result = project.run("--batch-file", str(batch), "--report", "report.json", "--max-workers", "4",
                                 "--executor", cluster.url(), timeout=300)
            killer.join(timeout=5)
    assert killed.is_set(), "the worker was killed while jobs ran"
    assert result.returncode == 0, result.stderr
    report = project.report()
    assert [j["status"] for j in report["jobs"]] == ["succeeded"] * jobs
    files = report["totals"]["files"]
    assert files["uploaded"] + files["skipped_same"] == jobs * per_job and files["failed"] == 0, files
    keys = list_keys(s3, bucket)
    data = [k for k in keys if k.startswith("data/")]
    assert len(data) == len(set(data)) == jobs * per_job
    for j in range(jobs):
        manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"_manifests/slow/job_{j}.json")["Body"].read())
        uris = [f["source_uri"] for f in manifest["files"]]
        assert len(uris) == len(set(uris)) == per_job
        assert {f["status"] for f in manifest["files"]} <= {"uploaded", "skipped_same"}
    restarted = [line for line in run_log.read_text().splitlines() if '"job_restarted"' in line]
    assert restarted, "a job of the killed worker ran again elsewhere"


def test_ctrl_c_stops_a_dask_local_run_cleanly(project: Project, s3: Any, bucket: str) -> None:
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it, workers included):
    running jobs stop at a file boundary, the rest never start, exit 130 with the report written."""
    with ApiServer(latency_s=0.1) as api:
        api.route("/items", slow_item)
        project.env.update({"API_URL": api.url, "MODULE_SYSTEM_DASK_WORKERS": "2"})
        project.write_registry({
            "version": 1,
            "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}, "timeout_s": 20},
            "services": {"slow": {"type": "api", "source": {"base_url": "${API_URL}", "endpoints": ["/items"],
                                                            "records_path": "data"},
                                  "destination": {"prefix": "data/api/slow/{job_id}/"}}},
        })
        batch = project.write_batch([{"job_id": f"job_{j}", "service_id": "slow",
                                      "params": {"endpoints": [f"/items?job={j}&i={i}" for i in range(40)]}}
                                     for j in range(6)])
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli_init", "--batch-file", str(batch),
                                 "--report", "report.json", "--max-workers", "2", "--executor", "dask-local"],
                                cwd=project.root, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        run_log = project.root / "temp" / "logs" / "system_orchestrator_job_executor.log"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not run_log.exists() or '"file_done"' not in run_log.read_text()):
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    report = project.report()
    assert report["exit_code"] == 130
    statuses = [j["status"] for j in report["jobs"]]
    assert set(statuses) <= {"cancelled", "succeeded"} and statuses[-1] == "cancelled", [
        (j["job_id"], j["status"], j.get("error")) for j in report["jobs"]]
    for job in report["jobs"]:
        if job["attempts"]:  # it ran: its manifest says what landed before the stop
            manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"_manifests/slow/{job['job_id']}.json")["Body"]
                                  .read())
            assert manifest["status"] == job["status"]
            assert len(manifest["files"]) == job["files"]["uploaded"]
    assert_no_secrets(project.secrets(), {"stdout": stdout, "stderr": stderr}, [])


def test_an_unreachable_scheduler_is_exit_2(project: Project, bucket: str) -> None:
    project.write_registry({"version": 1, "defaults": {"destination": {"bucket": bucket,
                                                                          "endpoint_url": "${S3_URL}"}},
                            "services": {"api": {"type": "api", "source": {"base_url": "http://127.0.0.1:9",
                                                                           "endpoints": ["/a"]}}}})
    batch = project.write_batch([{"job_id": "a1", "service_id": "api"}])
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = project.run("--batch-file", str(batch), "--executor", f"dask://127.0.0.1:{port}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: --executor dask://127.0.0.1:{port}: cannot "
                                                             "reach the Dask scheduler")
    assert "Traceback" not in result.stderr


def test_a_secret_written_into_the_registry_is_not_sent_to_dask(project: Project, bucket: str) -> None:
    project.write_registry({"version": 1, "defaults": {"destination": {"bucket": bucket,
                                                                          "endpoint_url": "${S3_URL}"}},
                            "services": {"api": {"type": "api", "source": {
                                "base_url": "http://127.0.0.1:9", "endpoints": ["/a"],
                                "auth": {"type": "bearer", "token": "literal-token-Qw9-in-the-file"}}}}})
    batch = project.write_batch([{"job_id": "a1", "service_id": "api"}])
    result = project.run("--batch-file", str(batch), "--executor", "dask-local")
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "service 'api'" in line and "key 'auth.token'" in line and "${VAR}" in line
    assert "literal-token-Qw9-in-the-file" not in result.stderr + result.stdout


def test_incremental_state_of_jobs_on_two_workers_keeps_every_file(project: Project, s3: Any, bucket: str,
                                                                   tmp_path: Path) -> None:
    """Six jobs of one incremental service, on two worker processes at once, each merge their files
    into the one state object under the cluster's lock: none of their updates is lost."""
    for j in range(6):
        folder = tmp_path / "drop" / f"p{j}"
        folder.mkdir(parents=True)
        for i in range(5):
            (folder / f"f{i}.txt").write_text(f"{j}-{i}")
            os.utime(folder / f"f{i}.txt", (time.time() - 60, time.time() - 60))
    project.env["MODULE_SYSTEM_DASK_WORKERS"] = "2"
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"drop": {"type": "local", "source": {"path": str(tmp_path / "drop" / "p0")},
                              "incremental": True,
                              "destination": {"prefix": "data/local/drop/{job_id}/"}}},
    })
    batch = project.write_batch([{"job_id": f"j{j}", "service_id": "drop",
                                  "params": {"path": str(tmp_path / "drop" / f"p{j}")}} for j in range(6)])
    result = project.run("--batch-file", str(batch), "--executor", "dask-local", "--max-workers", "6",
                         "--report", "report.json")
    assert result.returncode == 0, result.stderr
    (state_key,) = [k for k in list_keys(s3, bucket) if k.startswith("_state/drop/")]
    state = json.loads(s3.get_object(Bucket=bucket, Key=state_key)["Body"].read())
    assert len(state["files"]) == 6 * 5
    run_log = (project.root / "temp" / "logs" / "system_orchestrator_job_executor.log").read_text()
    assert len({json.loads(line).get("worker") for line in run_log.splitlines()} - {None}) == 2
