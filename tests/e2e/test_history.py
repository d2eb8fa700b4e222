"""Run history and metrics through the CLI: ``module-system history``, ``show``, ``run --metrics-port``.

Real runs of a ``local`` source into a local folder (and an ``api`` source on a local HTTP
server for the metrics), each recorded in the state dir's SQLite history by default.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.helpers import Project
from tests.servers.api_server import ApiServer, json_reply

GUARD_S = 90


def _drop(root: Path, count: int) -> Path:
    drop = root / "drop"
    drop.mkdir()
    for index in range(count):
        (drop / f"f{index}.json").write_text(json.dumps({"n": index}))
        os.utime(drop / f"f{index}.json", (1_000_000_000, 1_000_000_000))  # settled long ago
    (drop / "broken.json").write_text("{not json")
    os.utime(drop / "broken.json", (1_000_000_000, 1_000_000_000))
    return drop


def test_two_runs_then_history_and_show(project: Project) -> None:
    drop = _drop(project.root, 3)
    (project.root / "schema.json").write_text('{"type": "object"}')
    project.write_registry({"version": 1, "services": {
        "drop": {"type": "local", "source": {"path": str(drop)}, "validate": {"json_schema": "schema.json"},
                 "destination": {"type": "local", "path": "landing"}},
        "gone": {"type": "local", "source": {"path": str(project.root / "no-such-folder")},
                 "destination": {"type": "local", "path": "landing"}},
    }})
    first = project.cli("run", "--batch-file", str(project.write_batch([{"job_id": "j1", "service_id": "drop"}],
                                                                       "one.json")), "--report", "r1.json")
    assert first.returncode == 1, first.stderr[-2000:]  # broken.json is rejected
    second = project.cli("run", "--batch-file", str(project.write_batch(
        [{"job_id": "j1", "service_id": "drop"}, {"job_id": "j2", "service_id": "gone"}], "two.json")),
        "--report", "r2.json")
    assert second.returncode == 1, second.stderr[-2000:]
    assert "history_unavailable" not in first.stderr + second.stderr
    r1, r2 = project.report("r1.json"), project.report("r2.json")

    listed = project.cli("history", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert runs["total"] == 2
    assert [r["run_id"] for r in runs["runs"]] == [r2["run_id"], r1["run_id"]]  # newest first
    newest = runs["runs"][0]
    assert newest["status"] == "failed" and newest["exit_code"] == 1
    assert newest["files"] == r2["totals"]["files"] and newest["bytes"] == r2["totals"]["bytes"]
    assert newest["jobs"]["failed"] == 1 and newest["jobs"]["succeeded"] == 1
    assert Path(newest["failed_jobs_file"]).is_file() and newest["report_file"].endswith("r2.json")

    shown = project.cli("show", r2["run_id"], "--format", "json")
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)
    jobs = {j["job_id"]: j for j in run["jobs"]}
    assert jobs["j2"]["status"] == "failed" and "no such folder" in jobs["j2"]["error"]
    assert jobs["j2"]["error"] == r2["jobs"][1]["error"]
    assert [f["source_uri"].rsplit("/", 1)[1] for f in jobs["j1"]["file_records"]] == ["broken.json"]  # problems only
    assert {e["kind"] for e in run["events"]} >= {"source_failed", "file_rejected"}
    everything = json.loads(project.cli("show", r2["run_id"], "--format", "json", "--all-files").stdout)
    assert len({j["job_id"]: j for j in everything["jobs"]}["j1"]["file_records"]) == 4

    text = project.cli("show", r2["run_id"])
    assert text.returncode == 0 and "no such folder" in text.stdout and "broken.json" in text.stdout
    table = project.cli("history")
    assert r1["run_id"] in table.stdout and r2["run_id"] in table.stdout
    only_failed = json.loads(project.cli("history", "--format", "json", "--status", "succeeded").stdout)
    assert only_failed["total"] == 0

    unknown = project.cli("show", "20000101T000000Z-000000")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "no run" in unknown.stderr


def test_history_reads_nothing_before_the_first_run_and_names_a_bad_url(project: Project) -> None:
    empty = project.cli("history", "--format", "json")
    assert empty.returncode == 0 and json.loads(empty.stdout) == {"runs": [], "total": 0}
    bad = project.cli("history", "--history-db", "nosuchdb://x")
    assert bad.returncode == 2 and "--history-db" in bad.stderr and bad.stderr.count("\n") == 1


class GatedApi:
    """An API whose ``/slow`` page answers only once :attr:`release` is set; :attr:`reached` is set
    when the request for it arrives."""

    def __init__(self) -> None:
        self.reached, self.release = threading.Event(), threading.Event()
        self.server = ApiServer()
        self.server.route("/a", lambda _: json_reply({"data": [1]}))
        self.server.route("/b", lambda _: json_reply({"data": [2]}))
        self.server.route("/c", lambda _: json_reply({"data": [4]}))
        self.server.route("/slow", self._slow)

    def _slow(self, _: Any) -> Any:
        self.reached.set()
        self.release.wait(GUARD_S)
        return json_reply({"data": [3]})


@pytest.fixture()
def gated() -> Iterator[GatedApi]:
    api = GatedApi()
    with api.server:
        yield api
        api.release.set()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def test_metrics_are_served_while_a_run_is_in_progress(project: Project, gated: GatedApi) -> None:
    """Two jobs, one worker: the first waits on the slow page, the second waits in the queue."""
    project.write_registry({"version": 1, "services": {"api": {
        "type": "api", "source": {"base_url": gated.server.url, "endpoints": ["/a", "/b", "/slow"]},
        "transfers": 3, "destination": {"type": "local", "path": "landing"}}}})
    batch = project.write_batch([{"job_id": "slow_1", "service_id": "api"},
                                 {"job_id": "slow_2", "service_id": "api", "params": {"endpoints": ["/c"]}}])
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli_init", "--batch-file", str(batch), "--report",
                             "report.json", "--max-workers", "1", "--metrics-port", str(port)],
                            cwd=project.root, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert gated.reached.wait(GUARD_S), "the run never asked for the slow page"
        deadline = time.monotonic() + GUARD_S
        live = _scrape(port)
        while live['module_system_files_total{status=uploaded}'] < 2 and time.monotonic() < deadline:
            threading.Event().wait(0.05)  # the two fast pages land while the slow one is held
            live = _scrape(port)
    finally:
        gated.release.set()
        _, err = proc.communicate(timeout=GUARD_S)
    assert proc.returncode == 0, err[-2000:]
    assert live["module_system_files_total{status=uploaded}"] == 2
    assert live["module_system_workers_busy"] == 1 and live["module_system_jobs_queued"] == 1
    assert live["module_system_workers"] == 1
    assert live["module_system_jobs_total{status=succeeded}"] == 0
    assert live[f"module_system_host_slots_in_use{{host={gated.server.url}}}"] >= 1
    report = json.loads((project.root / "report.json").read_text())
    assert report["totals"]["files"]["uploaded"] == 4 and report["totals"]["jobs"]["succeeded"] == 2
    with pytest.raises(OSError):  # served only while the run is in progress
        _scrape(port)


def test_a_metrics_port_in_use_is_exit_2_before_the_run(project: Project) -> None:
    drop = _drop(project.root, 1)
    project.write_registry({"version": 1, "services": {"drop": {
        "type": "local", "source": {"path": str(drop)}, "destination": {"type": "local", "path": "landing"}}}})
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = project.cli("run", "--batch-file", str(batch), "--metrics-port", str(busy.getsockname()[1]))
    assert result.returncode == 2 and "--metrics-port" in result.stderr, result.stderr[-2000:]
    assert not (project.root / "landing").exists()
