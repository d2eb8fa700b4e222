"""A real run recorded in the history and counted by the metrics, against SQLite and PostgreSQL.

One batch through the engine, in process (the observers are the real ones): an ``api`` service on
a local HTTP server (a page that fails once with 503, so one retry; a page the schema rejects),
a ``local`` service whose primary folder is missing (its fallback serves it) and one whose folder
is missing with no fallback (the job fails). Then the history reader and a scrape of the metrics
over HTTP must both say what the run report says.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from common.job_config import load_batch, load_registry
from common.logger import configure_logging
from orchestrator.history import (
    HistoryReader,
    HistoryRecorder,
    HistoryStore,
    history_url,
)
from orchestrator.job_executor import BatchRun, RunOptions
from orchestrator.run_metrics import RunMetrics, serve_metrics
from orchestrator.run_observer import ObserverGroup
from orchestrator.run_report import build_report
from tests.servers.api_server import ApiServer, json_reply


def _write_project(root: Path, api_url: str) -> tuple[Path, Path]:
    good = root / "good"
    good.mkdir()
    for name in ("a.json", "b.json"):
        (good / name).write_text('{"data": [1]}')
        os.utime(good / name, (time.time() - 60, time.time() - 60))  # settled: the local source takes it
    (root / "schema.json").write_text(json.dumps({"type": "object", "required": ["data"]}))
    dest = {"type": "local", "path": str(root / "landing")}
    registry = {
        "version": 1,
        "defaults": {"destination": dest, "retry": {"attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.02}},
        "services": {
            "api": {"type": "api", "source": {"base_url": api_url, "endpoints": ["/ok", "/flaky", "/bad"]},
                    "validate": {"json_schema": "schema.json"}},
            "drop": {"type": "local", "source": {"path": str(root / "missing")}, "validate": {"json_schema": "schema.json"},
                     "fallback": [{"path": str(good)}]},
            "gone": {"type": "local", "source": {"path": str(root / "also-missing")}},
        },
    }
    (root / "registry.yaml").write_text(yaml.safe_dump(registry))
    jobs = [{"job_id": "api_1", "service_id": "api"}, {"job_id": "drop_1", "service_id": "drop"},
            {"job_id": "gone_1", "service_id": "gone"}]
    (root / "batch.json").write_text(json.dumps({"jobs": jobs}))
    return root / "registry.yaml", root / "batch.json"


@pytest.fixture()
def api() -> Any:
    calls = {"flaky": 0}

    def flaky(_: Any) -> Any:
        calls["flaky"] += 1
        return json_reply({"error": "busy"}, status=503) if calls["flaky"] == 1 else json_reply({"data": [2]})

    with ApiServer() as server:
        server.route("/ok", lambda _: json_reply({"data": [1]}))
        server.route("/flaky", flaky)
        server.route("/bad", lambda _: json_reply({"nodata": True}))
        yield server


def _scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def test_a_run_is_recorded_and_counted_as_its_report_says(tmp_path: Path, api: ApiServer, history_db: str) -> None:
    registry_file, batch_file = _write_project(tmp_path, api.url)
    registry = load_registry(registry_file)
    batch = load_batch(batch_file, registry)
    router = configure_logging(tmp_path / "logs", "json", stream=open(tmp_path / "console.log", "w"))  # noqa: SIM115
    metrics = RunMetrics()
    server = serve_metrics(metrics.registry, 0)
    recorder = HistoryRecorder(history_url(history_db, tmp_path))
    try:
        run = BatchRun(registry, batch, RunOptions(max_workers=2, log_dir=tmp_path / "logs", temp_dir=tmp_path / "state"),
                       router, observer=ObserverGroup([metrics, recorder]))
        outcome = run.execute()
        scraped = _scrape(server.port)
    finally:
        server.close()
        assert recorder.close(), "the history did not get every row"
        logging.getLogger().handlers.clear()
    totals = build_report(outcome, batch, None)["totals"]
    assert totals["retries"] >= 1 and totals["files"]["rejected"] == 1 and totals["jobs"]["failed"] == 1

    # The metrics: every counter equals the report's total.
    for status, count in totals["jobs"].items():
        assert scraped[f"module_system_jobs_total{{status={status}}}"] == count
    for status, count in totals["files"].items():
        assert scraped[f"module_system_files_total{{status={status}}}"] == count
    assert scraped["module_system_bytes_total"] == totals["bytes"]
    assert scraped["module_system_retries_total"] == totals["retries"]
    assert scraped["module_system_fallbacks_total"] == 1
    assert scraped["module_system_jobs_queued"] == 0 and scraped["module_system_workers_busy"] == 0
    assert scraped["module_system_job_duration_seconds_count{status=succeeded}"] == 2
    assert sum(v for k, v in scraped.items() if k.startswith("module_system_file_duration_seconds_count")) == 5
    assert scraped[f"module_system_run_info{{run_id={outcome.run_id}}}"] == 1
    assert any(k.startswith("module_system_host_slots_in_use{host=http://127.0.0.1") for k in scraped)

    # The history: the same totals, the jobs, their files and the notable events.
    store = HistoryStore.open(history_url(history_db, tmp_path), create=False)
    try:
        reader = HistoryReader(store)
        page = reader.list_runs()
        assert page.total == 1
        summary = page.items[0]
        assert (summary.run_id, summary.status, summary.exit_code) == (outcome.run_id, "failed", 1)
        assert summary.files == totals["files"] and summary.bytes == totals["bytes"]
        assert summary.retries == totals["retries"]
        assert summary.jobs == {"queued": 0, "running": 0, **totals["jobs"]}
        assert reader.list_runs(status="succeeded").total == 0 and reader.list_runs(status="failed").total == 1
        before = summary.started_at - dt.timedelta(seconds=1)
        elsewhere = dt.timezone(dt.timedelta(hours=-5))  # the same instant, written in another zone
        assert reader.list_runs(since=before.astimezone(elsewhere)).total == 1
        assert reader.list_runs(until=before.astimezone(elsewhere)).total == 0

        detail = reader.run(outcome.run_id)
        assert detail is not None
        assert [j.job_id for j in detail.jobs] == ["api_1", "drop_1", "gone_1"]
        by_id = {j.job_id: j for j in detail.jobs}
        for result in outcome.results:
            job = by_id[result.job_id]
            assert (job.status, job.files, job.bytes, job.error) == (result.status, dict(result.files), result.bytes,
                                                                     result.error)
        assert by_id["drop_1"].source_used == "0"
        kinds = [e.kind for e in detail.events]
        for kind in ("retrying", "source_failed", "fallback_used", "file_rejected"):
            assert kind in kinds, kinds

        api_job = reader.job(by_id["api_1"].id)
        assert api_job is not None
        assert sorted(f.status for f in api_job.files.items) == ["rejected", "uploaded", "uploaded"]
        rejected = reader.files(outcome.run_id, status="rejected").items
        assert len(rejected) == 1 and rejected[0].source_uri.endswith("/bad") and rejected[0].problems
        assert reader.files(outcome.run_id, limit=2).total == 5 and len(reader.files(outcome.run_id, limit=2).items) == 2
        retry = [e for e in api_job.events.items if e.kind == "retrying"]
        assert retry and "503" in retry[0].message
        assert reader.find_job(outcome.run_id, "gone_1") is not None and reader.job(10**9) is None
        assert reader.run("no-such-run") is None

        first = reader.events(outcome.run_id, limit=1)
        rest = reader.events(outcome.run_id, after_id=first.items[0].id)
        assert len(rest.items) == first.total - 1

        logs = reader.log_records(outcome.run_id, job_id="gone_1", level="warning")
        assert [r.event for r in logs.records] == ["source_failed"] and logs.file is not None
        assert not reader.log_records(outcome.run_id, job_id="gone_1", level="warning", offset=logs.next_offset).records
        texts = reader.log_records(outcome.run_id, text="FALLBACK_USED")
        assert {r.event for r in texts.records} == {"fallback_used"}
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
        assert not reader.log_records(outcome.run_id, since=later).records

        flow = reader.throughput(outcome.run_id, buckets=10)
        assert sum(flow.files) == 5 and sum(flow.bytes) == totals["bytes"]
        stats = reader.stats()
        assert stats["runs"]["failed"] == 1 and stats["files"] == totals["files"]
        assert json.loads(json.dumps(detail.to_dict()))["run"]["run_id"] == outcome.run_id
    finally:
        store.close()
