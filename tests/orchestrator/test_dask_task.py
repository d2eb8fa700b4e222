"""What a job sent to Dask carries: its typed config and the run's context, its secrets as
``${VAR}`` (read again on the worker), never their values; and ``--executor`` parsing."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import yaml
from distributed.protocol.pickle import dumps, loads

from common.exceptions import ConfigError
from common.job_config import load_batch, load_registry
from common.secret import Secret
from orchestrator.dask_executor import _literal_secret
from orchestrator.dask_worker import (
    RemoteJob,
    RemoteRun,
    end_worker_run,
    run_remote_job,
    stop_worker_run,
)
from orchestrator.executors import ExecutorChoice, parse_executor

FTP_PASSWORD = "ftp-pw-9TqL-only-on-workers"
TOKEN = "tok-Zr81-only-on-workers"
SQL_PASSWORD = "pg-pw-Xk2-only-on-workers"


def tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[RemoteJob]:
    monkeypatch.setenv("FTP_PASSWORD", FTP_PASSWORD)
    monkeypatch.setenv("WEATHER_TOKEN", TOKEN)
    monkeypatch.setenv("PG_PASSWORD", SQL_PASSWORD)
    registry = tmp_path / "project_registry.yaml"
    registry.write_text(yaml.safe_dump({
        "version": 1,
        "defaults": {"destination": {"bucket": "landing", "endpoint_url": "http://127.0.0.1:9"}},
        "services": {
            "sales": {"type": "ftp", "source": {"host": "127.0.0.1", "user": "u", "password": "${FTP_PASSWORD}",
                                                "path": "/in"}},
            "weather": {"type": "api", "source": {"base_url": "http://127.0.0.1:9", "endpoints": ["/a"],
                                                  "auth": {"type": "bearer", "token": "${WEATHER_TOKEN}"}},
                        "destination": [{"type": "s3", "bucket": "landing"},
                                        {"type": "sql", "url": "postgresql://u:${PG_PASSWORD}@127.0.0.1:9/db"}]},
        },
    }))
    batch = tmp_path / "jobs.json"
    batch.write_text(json.dumps({"jobs": [{"job_id": "s1", "service_id": "sales"},
                                          {"job_id": "s2", "service_id": "sales", "params": {"path": "/other"}},
                                          {"job_id": "w1", "service_id": "weather"}]}))
    reg = load_registry(registry)
    run = RemoteRun("run-1", dt.datetime.now(dt.timezone.utc), str(tmp_path), 4, {"ftp://127.0.0.1:21": 2}, 20,
                    "module_system/run-1")
    return [RemoteJob(run, job, reg.services[job.service_id], ()) for job in load_batch(batch, reg).jobs]


def test_a_pickled_task_holds_no_secret_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for task in tasks(tmp_path, monkeypatch):
        shipped = dumps(task)  # as the Dask client serialises a task's argument
        for secret in (FTP_PASSWORD, TOKEN, SQL_PASSWORD):
            assert secret.encode() not in shipped, (task.job.job_id, secret)
        assert b"${FTP_PASSWORD}" in shipped or b"${WEATHER_TOKEN}" in shipped
        assert loads(shipped) == task  # read again from this (the worker's) environment: the same config


def test_a_secret_is_read_from_the_worker_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = dumps(tasks(tmp_path, monkeypatch)[1])  # params merged over the service's source
    monkeypatch.setenv("FTP_PASSWORD", "the-worker-own-password")
    password = loads(shipped).job.sources[0]["password"]
    assert isinstance(password, Secret) and password.reveal() == "the-worker-own-password"
    monkeypatch.delenv("FTP_PASSWORD")
    with pytest.raises(ConfigError, match="environment variable FTP_PASSWORD is not set on this worker"):
        loads(shipped)


def test_a_stop_that_reaches_a_worker_before_the_run_still_stops_its_jobs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while a job is on its way to a worker that has not yet run a task of the run:
    the stop is kept, and the job, arriving after it, does not start."""
    from distributed import Client, LocalCluster

    monkeypatch.setenv("MODULE_SYSTEM_STATE_DIR", str(tmp_path / "state"))
    task = tasks(tmp_path, monkeypatch)[0]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        assert list(client.run(stop_worker_run, task.run.run_id, "interrupted").values()) == [False]
        outcome = client.submit(run_remote_job, task, pure=False).result()
        assert list(client.run(end_worker_run, task.run.run_id).values()) == [True]
    assert (outcome.result.status, outcome.result.attempts) == ("cancelled", 0), outcome.result
    assert outcome.result.error == "not started: run interrupted"


def test_a_secret_written_into_the_registry_is_found_before_it_is_shipped() -> None:
    assert _literal_secret({"auth": {"token": Secret("literal-Hq3-in-the-registry")}}) == "auth.token"
    assert _literal_secret({"auth": {"token": Secret("from-env-Hq4", "${TOKEN}")}}) is None


@pytest.mark.parametrize(("text", "choice"), [
    ("threads", ExecutorChoice("threads")),
    ("dask-local", ExecutorChoice("dask-local")),
    ("dask://10.0.0.5:8786", ExecutorChoice("dask", "tcp://10.0.0.5:8786")),
    ("dask://scheduler.internal:8786/", ExecutorChoice("dask", "tcp://scheduler.internal:8786")),
])
def test_executor_values(text: str, choice: ExecutorChoice) -> None:
    assert parse_executor(text) == choice


@pytest.mark.parametrize("text", ["dask", "dask://host", "dask://:8786", "dask://h:99999", "processes", ""])
def test_bad_executor_values_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="--executor"):
        parse_executor(text)
