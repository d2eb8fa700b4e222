"""Micro-benchmarks of the per-job work: config loading, a batch of no-op jobs, log events.

    pytest bench/micro --benchmark-only

The no-op batch runs in this process against moto's in-process mock (``mock_aws``: no
HTTP, no server), so it measures what the framework and botocore's client side cost per
job; ``python bench/run.py`` measures the same batch through the CLI against the
moto server. Each benchmark stores a per-job or per-event figure in ``extra_info``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from common.job_config import load_batch, load_registry

NOOP_JOBS = 300
CONFIG_JOBS = 10_000


def _write_noop_project(root: Path, jobs: int, endpoint: str | None) -> tuple[Path, Path]:
    (root / "empty").mkdir(parents=True, exist_ok=True)
    destination: dict[str, Any] = {"bucket": "bench-noop"}
    if endpoint:
        destination["endpoint_url"] = endpoint
    registry = root / "registry.yaml"
    registry.write_text(yaml.safe_dump({
        "version": 1, "defaults": {"destination": destination},
        "services": {"noop": {"type": "localdir", "source": {"path": str(root / "empty")}}},
    }))
    batch = root / "batch.json"
    batch.write_text(json.dumps({"jobs": [{"job_id": f"j{i:05d}", "service_id": "noop"} for i in range(jobs)]}))
    return registry, batch


@pytest.fixture()
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "LOG_LEVEL": "WARNING"}.items():
        monkeypatch.setenv(key, value)


def test_load_registry_and_batch_10k_jobs(benchmark: Any, tmp_path: Path) -> None:
    """Parsing and checking a batch of 10,000 jobs (each job's source checked against its schema)."""
    registry_file, batch_file = _write_noop_project(tmp_path, CONFIG_JOBS, "http://127.0.0.1:9")

    def load() -> int:
        return len(load_batch(batch_file, load_registry(registry_file)).jobs)

    assert benchmark.pedantic(load, rounds=3, iterations=1) == CONFIG_JOBS
    benchmark.extra_info["us_per_job"] = round(benchmark.stats.stats.mean * 1e6 / CONFIG_JOBS, 1)


def test_noop_batch_in_process(benchmark: Any, tmp_path: Path, aws_env: None,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """``run_batch`` of 300 localdir jobs on an empty folder, 20 workers, in-process S3 mock.

    Per job: dispatch, log file, runner, module, workdir, manifest (HEAD + PUT).
    """
    from moto import mock_aws

    from orchestrator.cli_init import run_batch

    registry_file, batch_file = _write_noop_project(tmp_path, NOOP_JOBS, None)
    monkeypatch.chdir(tmp_path)
    with mock_aws():
        import boto3

        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="bench-noop")

        def run() -> int:
            return int(run_batch(batch_file, registry_file, max_workers=20, log_dir=tmp_path / "logs",
                                 log_format="json"))

        assert benchmark.pedantic(run, rounds=3, iterations=1) == 0
    benchmark.extra_info["ms_per_job"] = round(benchmark.stats.stats.mean * 1e3 / NOOP_JOBS, 3)
    logging.getLogger().handlers.clear()


def test_structlog_event(benchmark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One INFO event through the run's logging set-up (JSON to a file, bound context, redaction)."""
    from common.logger import configure_logging

    monkeypatch.setenv("LOG_LEVEL", "INFO")
    configure_logging(tmp_path / "logs", "json", stream=open(tmp_path / "console.log", "w"))  # noqa: SIM115
    log = structlog.get_logger("bench")
    structlog.contextvars.bind_contextvars(run_id="r", job_id="j", service_id="s", module="m", thread="t")
    try:
        benchmark(log.info, "file_done", uri="ftp://host/a.csv", key="data/a.csv", status="uploaded", bytes=1)
    finally:
        structlog.contextvars.clear_contextvars()
        for handler in logging.getLogger().handlers[:]:
            logging.getLogger().removeHandler(handler)
            handler.close()
    benchmark.extra_info["us_per_event"] = round(benchmark.stats.stats.mean * 1e6, 1)
