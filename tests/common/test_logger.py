"""Logging: JSON lines per job, bound context, secrets scrubbed, no frame locals."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
import structlog

from common.logger import EXECUTOR_LOG, configure_logging
from common.secret import Secret

log = structlog.get_logger("tests.logger")


@pytest.fixture(autouse=True)
def _restore_logging() -> None:
    yield
    configure_logging(None, "console", io.StringIO())
    structlog.contextvars.clear_contextvars()


def test_job_records_are_routed_and_secrets_scrubbed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    console = io.StringIO()
    router = configure_logging(tmp_path, "json", console)
    secret = Secret("tok-abc-123-secret")
    router.open("job1", tmp_path / "job1_svc_ftp.log")
    structlog.contextvars.bind_contextvars(run_id="r1", job_id="job1", service_id="svc", module="ftp", thread="t")
    log.info("connected", detail=f"Bearer {secret.reveal()}", nested={"k": [secret.reveal()]})
    try:
        token = secret.reveal()  # noqa: F841 - a local the traceback must not show
        raise RuntimeError(f"failed with {secret.reveal()}")
    except RuntimeError:
        log.error("boom", exc_info=True)
    structlog.contextvars.clear_contextvars()
    log.info("executor_only")
    router.close_job("job1")

    job_lines = [json.loads(line) for line in (tmp_path / "job1_svc_ftp.log").read_text().splitlines()]
    assert [r["event"] for r in job_lines] == ["connected", "boom"]
    assert all(r["run_id"] == "r1" and r["module"] == "ftp" for r in job_lines)
    executor = (tmp_path / EXECUTOR_LOG).read_text()
    assert "executor_only" in executor and "connected" in executor
    for text in (executor, (tmp_path / "job1_svc_ftp.log").read_text(), console.getvalue()):
        assert "tok-abc-123-secret" not in text
        assert '"locals"' not in text
    assert "Bearer ***" in executor


def test_log_level_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    configure_logging(tmp_path, "json", io.StringIO())
    log.info("quiet")
    log.warning("loud")
    logging.getLogger().handlers[1].flush()
    text = (tmp_path / EXECUTOR_LOG).read_text()
    assert "loud" in text and "quiet" not in text
