"""The API through FastAPI's test client: batches really run (local folders, a local API server)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.history.store import history_url
from orchestrator.serve.app import Server, create_app
from orchestrator.serve.auth import load_tokens
from orchestrator.serve.runs import ServeSettings
from tests.orchestrator.serve.conftest import (
    BOTH_TOKEN,
    OPERATE_TOKEN,
    READ_TOKEN,
    ServeProject,
)

Factory = Callable[..., tuple[TestClient, Server]]


@pytest.fixture()
def served(serve_project: ServeProject) -> Iterator[Factory]:
    """Make the app over the project (``tokens``: environment variables; ``tokens_file`` lines)."""
    clients: list[TestClient] = []

    def make(env: dict[str, str] | None = None, tokens_file: str | None = None,
             rate_limit: int = 0, history_db: str | None = None, keep_served: int = 500) -> tuple[TestClient, Server]:
        state = serve_project.state_dir
        path = None
        if tokens_file is not None:
            path = serve_project.root / "tokens.txt"
            path.write_text(tokens_file)
        settings = ServeSettings(serve_project.registry, state, state / "logs", history_url(history_db, state),
                                 max_workers=4, refresh_s=0.05, keep_served=keep_served)
        server = Server(settings, load_tokens(path, env or {}), rate_limit)
        client = TestClient(create_app(server))
        client.__enter__()
        clients.append(client)
        return client, server

    yield make
    serve_project.gate.set()
    for client in clients:
        client.__exit__(None, None, None)


def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll ``condition`` until it is truthy (a failure after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
    return value


def submit(client: TestClient, *jobs: tuple[str, str], headers: dict[str, str] | None = None) -> str:
    response = client.post("/api/v1/batches", json={"jobs": [{"job_id": j, "service_id": s} for j, s in jobs]},
                           headers=headers or {})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/api/v1/runs/{response.json()['run_id']}"
    return response.json()["run_id"]  # type: ignore[no-any-return]


def finished(server: Server, run_id: str) -> None:
    served = server.manager.get(run_id)
    assert served is not None and served.done.wait(60), "the run did not finish"


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_a_submitted_batch_runs_and_its_run_jobs_files_and_logs_are_served(served: Factory,
                                                                         serve_project: ServeProject) -> None:
    client, server = served()
    run_id = submit(client, ("drop_1", "drop"), ("later_1", "later"))
    finished(server, run_id)

    detail = client.get(f"/api/v1/runs/{run_id}").json()
    run = detail["run"]
    assert run["status"] == "failed" and run["exit_code"] == 1 and run["served"] is True
    assert run["jobs"]["succeeded"] == 1 and run["jobs"]["failed"] == 1
    assert run["files"]["uploaded"] == 1 and run["files"]["rejected"] == 1
    assert run["report_file"] == str(serve_project.state_dir / f"report_{run_id}.json")
    jobs = {j["job_id"]: j for j in detail["jobs"]}
    assert jobs["drop_1"]["status"] == "succeeded" and jobs["later_1"]["status"] == "failed"
    assert "no such folder" in jobs["later_1"]["error"]
    assert sum(detail["throughput"]["files"]) == 2

    job = client.get(f"/api/v1/jobs/{jobs['drop_1']['id']}").json()
    by_status = {f["status"]: f for f in job["files"]["items"]}
    assert by_status["uploaded"]["key"].endswith("good.json")
    assert by_status["rejected"]["problems"], "the rejected file's problems are served"
    assert (serve_project.landing / by_status["uploaded"]["key"]).is_file()
    rejected_only = client.get(f"/api/v1/jobs/{jobs['drop_1']['id']}", params={"file_status": "rejected"}).json()
    assert [f["status"] for f in rejected_only["files"]["items"]] == ["rejected"]

    logs = client.get("/api/v1/logs", params={"run_id": run_id, "level": "warning", "text": "NO SUCH FOLDER"}).json()
    assert logs["records"] and all(r["level"] in ("warning", "error") for r in logs["records"])
    assert {r["job_id"] for r in logs["records"]} == {"later_1"}
    job_logs = client.get("/api/v1/logs", params={"run_id": run_id, "job_id": "drop_1"}).json()
    assert job_logs["records"] and {r["job_id"] for r in job_logs["records"]} == {"drop_1"}
    later = client.get("/api/v1/logs", params={"run_id": run_id, "since": "2999-01-01T00:00:00Z"}).json()
    assert later["records"] == []

    runs = client.get("/api/v1/runs").json()
    assert [r["run_id"] for r in runs["items"]] == [run_id] and runs["total"] == 1
    assert client.get("/api/v1/runs", params={"status": "succeeded"}).json()["items"] == []
    stats = client.get("/api/v1/stats").json()
    assert stats["runs"]["failed"] == 1 and stats["files"]["uploaded"] == 1
    health = client.get("/api/v1/health").json()
    assert health == {**health, "status": "ok", "history": "ok", "runs_in_progress": 0, "runs_queued": 0}

    # A finished run's event stream is its final event alone.
    with client.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
        lines = [line for line in stream.iter_lines() if line.startswith("event:")]
    assert lines == ["event: run_finished"]


def test_metrics_equal_the_run_reports_totals(served: Factory, serve_project: ServeProject) -> None:
    client, server = served()
    before = metric_values(client.get("/metrics").text)
    assert before[("module_system_files_total", (("status", "uploaded"),))] == 0
    reports = []
    for jobs in ((("drop_1", "drop"), ("later_1", "later")), (("drop_2", "drop"),)):
        run_id = submit(client, *jobs)
        finished(server, run_id)
        reports.append(serve_project.report(run_id)["totals"])
        values = metric_values(client.get("/metrics").text)
        for status in ("succeeded", "failed", "timed_out", "cancelled"):
            assert values[("module_system_jobs_total", (("status", status),))] == sum(r["jobs"][status] for r in reports)
        for status in ("uploaded", "skipped_same", "skipped_unchanged", "rejected", "failed"):
            assert values[("module_system_files_total", (("status", status),))] == sum(r["files"][status] for r in reports)
        assert values[("module_system_bytes_total", ())] == sum(r["bytes"] for r in reports)
        assert values[("module_system_retries_total", ())] == sum(r["retries"] for r in reports)
    assert reports[0]["files"]["uploaded"] == 1 and reports[0]["jobs"]["failed"] == 1
    assert reports[1]["files"]["skipped_same"] == 1, "the second run finds good.json landed already"


def test_retry_failed_runs_exactly_the_failed_jobs(served: Factory, serve_project: ServeProject) -> None:
    client, server = served()
    first = submit(client, ("drop_1", "drop"), ("later_1", "later"))
    finished(server, first)
    serve_project.make_later()
    response = client.post(f"/api/v1/runs/{first}/retry-failed")
    assert response.status_code == 202, response.text
    second = response.json()["run_id"]
    finished(server, second)
    detail = client.get(f"/api/v1/runs/{second}").json()
    assert [(j["job_id"], j["status"]) for j in detail["jobs"]] == [("later_1", "succeeded")]
    assert detail["run"]["status"] == "succeeded"
    assert client.post(f"/api/v1/runs/{second}/retry-failed").json() == {
        "detail": f"run {second} has no failed jobs"}
    assert client.post("/api/v1/runs/20260101T000000Z-000000/retry-failed").status_code == 404


def test_a_running_run_shows_its_hosts_is_live_and_cancels_cleanly(served: Factory,
                                                                   serve_project: ServeProject) -> None:
    client, server = served()
    run_id = submit(client, ("slow_1", "slow"))
    queued = submit(client, ("drop_1", "drop"))
    wait_for(lambda: serve_project.api.requests_to("/v1/slow"))  # the job waits for the gate now

    running = client.get(f"/api/v1/runs/{run_id}").json()
    assert running["run"]["status"] == "running"
    assert client.get(f"/api/v1/runs/{queued}").json()["run"]["status"] == "queued"
    assert client.get("/api/v1/runs").json()["items"][0]["run_id"] == queued
    hosts = client.get("/api/v1/hosts").json()["hosts"]
    host = serve_project.api.url  # the limiter names a host by scheme, address and port
    assert {"run_id": run_id, "host": host, "in_use": 1, "capacity": 2} in hosts
    health = client.get("/api/v1/health").json()
    assert health["runs_in_progress"] == 1 and health["runs_queued"] == 1

    cancelled = client.post(f"/api/v1/runs/{queued}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/api/v1/runs/{run_id}/cancel").status_code == 200
    serve_project.gate.set()
    finished(server, run_id)
    run = client.get(f"/api/v1/runs/{run_id}").json()["run"]
    assert run["status"] == "interrupted" and run["exit_code"] == 130 and run["stop_reason"] == "interrupted"
    assert client.post(f"/api/v1/runs/{run_id}/cancel").status_code == 409
    assert client.post("/api/v1/runs/20260101T000000Z-000000/cancel").status_code == 404
    assert client.get("/api/v1/hosts").json() == {"hosts": []}
    assert server.manager.get(queued).state == "cancelled"  # type: ignore[union-attr]


@pytest.mark.parametrize(("method", "path", "body", "status", "says"), [
    ("POST", "/api/v1/batches", {"jobs": []}, 422, "jobs"),
    ("POST", "/api/v1/batches", {"jobs": [{"job_id": "a", "service_id": "nope"}]}, 422, "unknown service 'nope'"),
    ("POST", "/api/v1/batches", {"jobs": [{"job_id": "a b", "service_id": "drop"}]}, 422, "job_id"),
    ("POST", "/api/v1/batches", {"jobs": [{"job_id": "a", "service_id": "drop"}], "registry": "x"}, 422, "registry"),
    ("POST", "/api/v1/batches", {"jobs": [{"job_id": "a", "service_id": "drop"}] * 2}, 422, "duplicate job_id"),
    ("POST", "/api/v1/batches", {"jobs": [{"job_id": "a", "service_id": "drop", "params": {"nope": 1}}]}, 422,
     "nope"),
    ("GET", "/api/v1/runs/bad%20id", None, 422, "run_id"),
    ("GET", "/api/v1/runs/20260101T000000Z-000000", None, 404, "no run"),
    ("GET", "/api/v1/jobs/0", None, 422, "id"),
    ("GET", "/api/v1/jobs/99999999999999999999999", None, 422, "id"),
    ("GET", "/api/v1/jobs/12345", None, 404, "no job 12345"),
    ("GET", "/api/v1/logs", None, 422, "run_id"),
    ("GET", "/api/v1/logs?run_id=20260101T000000Z-000000", None, 404, "no run"),
    ("GET", "/api/v1/runs?since=yesterday", None, 422, "since"),
    ("GET", "/api/v1/runs?since=0001-01-01T00:00:00%2B05:00", None, 422, "out of range"),
    ("GET", "/api/v1/runs?limit=0", None, 422, "limit"),
    ("GET", "/api/v1/runs/20260101T000000Z-000000/events", None, 404, "no run"),
])
def test_bad_requests_are_clear_4xx(served: Factory, method: str, path: str, body: Any, status: int,
                                    says: str) -> None:
    client, _ = served()
    response = client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert says in response.json()["detail"]


def test_a_body_that_is_not_json_is_422(served: Factory) -> None:
    client, _ = served()
    response = client.post("/api/v1/batches", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["detail"]


def test_scopes_a_read_token_cannot_submit(served: Factory, serve_project: ServeProject,
                                           capfd: pytest.CaptureFixture[str]) -> None:
    client, server = served(env={"MODULE_SYSTEM_API_TOKEN": BOTH_TOKEN},
                            tokens_file=f"# tokens\n{READ_TOKEN} read\n{OPERATE_TOKEN} operate\n")
    read, operate, both = ({"Authorization": f"Bearer {t}"} for t in (READ_TOKEN, OPERATE_TOKEN, BOTH_TOKEN))
    batch = {"jobs": [{"job_id": "drop_1", "service_id": "drop"}]}

    missing = client.get("/api/v1/runs")
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/api/v1/runs", headers={"Authorization": "Bearer not-a-token-of-ours"}).status_code == 401
    assert client.get("/api/v1/runs", headers=read).status_code == 200
    assert client.get("/metrics", headers=read).status_code == 200
    assert client.get("/metrics").status_code == 401

    refused = client.post("/api/v1/batches", json=batch, headers=read)
    assert refused.status_code == 403 and "operate" in refused.json()["detail"]
    assert client.get("/api/v1/runs", headers=operate).status_code == 403
    run_id = submit(client, ("drop_1", "drop"), headers=operate)
    finished(server, run_id)
    assert client.get(f"/api/v1/runs/{run_id}", headers=both).json()["run"]["status"] == "failed"  # a rejected file
    assert client.post("/api/v1/batches", json=batch, headers={**both, "Origin": "http://evil.example"}).status_code == 403

    # The dashboard: a sign-in sets the cookie; a mutating call by cookie needs the dashboard header.
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert client.post("/login", content=b"token=wrong&next=/", follow_redirects=False).status_code == 401
    signed = client.post("/login", content=f"token={BOTH_TOKEN}&next=//evil.example/".encode(), follow_redirects=False)
    assert signed.status_code == 303 and signed.headers["location"] == "/"
    assert "httponly" in signed.headers["set-cookie"].lower() and "samesite=strict" in signed.headers["set-cookie"].lower()
    assert client.get("/").status_code == 200
    assert client.post("/api/v1/batches", json=batch).status_code == 403
    assert client.post("/api/v1/batches", json=batch, headers={"X-Module-System-Dashboard": "1"}).status_code == 202

    out, err = capfd.readouterr()
    logs = "".join(p.read_text() for p in (serve_project.state_dir / "logs").glob("*.log"))
    for token in (READ_TOKEN, OPERATE_TOKEN, BOTH_TOKEN):
        assert token not in out + err + logs


def test_mutating_requests_are_rate_limited_per_client(served: Factory) -> None:
    client, _ = served(rate_limit=2)
    codes = [client.post("/api/v1/runs/20260101T000000Z-000000/cancel").status_code for _ in range(2)]
    assert codes == [404, 404]
    limited = client.post("/api/v1/runs/20260101T000000Z-000000/cancel")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert client.get("/api/v1/runs").status_code == 200, "reading is not limited"
    codes = [client.post("/login", content=b"token=guess-0123456789abcdef").status_code for _ in range(3)]
    assert codes[-1] == 429, "signing in is limited too"


def test_the_dashboard_pages_render_without_javascript(served: Factory, serve_project: ServeProject) -> None:
    client, server = served()
    run_id = submit(client, ("drop_1", "drop"), ("later_1", "later"))
    finished(server, run_id)
    index = client.get("/").text
    assert run_id in index and 'id="submit-batch"' in index
    page = client.get(f"/runs/{run_id}").text
    assert "later_1" in page and "no such folder" in page and 'id="retry-failed"' in page and "<svg" in page
    job_id = client.get(f"/api/v1/runs/{run_id}").json()["jobs"][1]["id"]
    assert "no such folder" in client.get(f"/jobs/{job_id}").text
    assert client.get("/hosts").status_code == 200
    assert client.get("/runs/20260101T000000Z-000000").status_code == 404
    assert client.get("/jobs/424242").status_code == 404
    assert client.get("/static/dashboard.js").status_code == 200
    assert set(client.get("/openapi.json").json()["paths"]) >= {
        "/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/jobs/{id}", "/api/v1/logs", "/api/v1/hosts",
        "/api/v1/health", "/api/v1/stats", "/api/v1/batches", "/api/v1/runs/{run_id}/cancel",
        "/api/v1/runs/{run_id}/retry-failed", "/api/v1/runs/{run_id}/events", "/metrics"}


def test_a_batch_file_kept_for_each_submission(served: Factory, serve_project: ServeProject) -> None:
    client, server = served()
    run_id = submit(client, ("drop_1", "drop"))
    finished(server, run_id)
    batch = Path(client.get(f"/api/v1/runs/{run_id}").json()["run"]["batch_file"])
    assert batch == serve_project.state_dir / "batches" / f"{run_id}.json" and batch.is_file()


def test_a_run_of_another_process_is_followed_from_the_history(served: Factory, serve_project: ServeProject) -> None:
    import json
    import subprocess
    import sys

    client, _ = served()
    batch = serve_project.root / "cli_batch.json"
    batch.write_text(json.dumps({"jobs": [{"job_id": "slow_cli", "service_id": "slow"}]}))
    process = subprocess.Popen([sys.executable, "-m", "orchestrator.cli_init", "--batch-file", str(batch),
                                "--registry", str(serve_project.registry), "--state-dir", str(serve_project.state_dir)],
                               cwd=serve_project.root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = wait_for(lambda: next(iter(client.get("/api/v1/runs", params={"status": "running"}).json()["items"]),
                                    None))
        assert run["served"] is False
        wait_for(lambda: serve_project.api.requests_to("/v1/slow"))
        cancel = client.post(f"/api/v1/runs/{run['run_id']}/cancel")
        assert cancel.status_code == 409 and "not started by this server" in cancel.json()["detail"]
        kinds = []
        with client.stream("GET", f"/api/v1/runs/{run['run_id']}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kinds.append(line.split(":", 1)[1].strip())
                    if kinds[-1] == "snapshot":
                        serve_project.gate.set()
        assert kinds[0] == "snapshot" and kinds[-1] == "run_finished" and "progress" in kinds
        assert process.wait(60) == 0
    finally:
        serve_project.gate.set()
        if process.poll() is None:
            process.kill()
    assert client.get(f"/api/v1/runs/{run['run_id']}").json()["run"]["status"] == "succeeded"


def test_a_postgresql_history(served: Factory, serve_project: ServeProject, postgres_url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1),
                              isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text('CREATE DATABASE "serve_history"'))
    engine.dispose()
    client, server = served(history_db=postgres_url.rsplit("/", 1)[0] + "/serve_history")
    run_id = submit(client, ("drop_1", "drop"), ("later_1", "later"))
    finished(server, run_id)
    detail = client.get(f"/api/v1/runs/{run_id}").json()
    assert detail["run"]["status"] == "failed" and [j["status"] for j in detail["jobs"]] == ["succeeded", "failed"]
    assert client.get("/api/v1/stats").json()["files"] == serve_project.report(run_id)["totals"]["files"]
    assert client.get("/api/v1/health").json()["history"] == "ok"


def test_only_the_latest_finished_runs_stay_in_memory(served: Factory, serve_project: ServeProject) -> None:
    client, server = served(keep_served=1)
    runs = []
    for n in range(3):
        runs.append(submit(client, (f"drop_{n}", "drop")))
        finished(server, runs[-1])
    assert [s.run_id for s in server.manager.served()] == runs[-2:]  # the last finished one, and the newest
    assert client.get(f"/api/v1/runs/{runs[0]}").json()["run"]["served"] is False, "still in the history"
    values = metric_values(client.get("/metrics").text)
    assert values[("module_system_jobs_total", (("status", "succeeded"),))] == 3, "its metrics are kept"


def test_a_served_run_notifies_the_registrys_webhooks(served: Factory, serve_project: ServeProject) -> None:
    import yaml

    from tests.servers.api_server import json_reply

    serve_project.api.route("/hook", lambda request: json_reply({"ok": True}))
    registry = yaml.safe_load(serve_project.registry.read_text())
    registry["notify"] = {"webhooks": [{"url": f"{serve_project.api.url}/hook", "on": "always"}]}
    serve_project.registry.write_text(yaml.safe_dump(registry))
    client, server = served()
    run_id = submit(client, ("drop_1", "drop"))
    finished(server, run_id)
    posted = wait_for(lambda: serve_project.api.requests_to("/hook"))
    assert json.loads(posted[0].body)["run_id"] == run_id
