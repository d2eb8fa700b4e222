"""``module-system serve`` end to end: a real uvicorn on 127.0.0.1, the CLI's refusals."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx

from tests.orchestrator.serve.conftest import BOTH_TOKEN, ServeProject
from tests.orchestrator.serve.helpers import running_server, serve_command, serve_env


def sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a server-sent events stream."""
    kind = None
    for line in lines:
        if line.startswith("event:"):
            kind = line.split(":", 1)[1].strip()
        elif line.startswith("data:") and kind is not None:
            yield kind, json.loads(line.split(":", 1)[1])
            kind = None


def test_a_run_is_followed_live_over_server_sent_events(serve_project: ServeProject) -> None:
    with running_server(serve_project) as url, httpx.Client(base_url=url, timeout=30) as client:
        accepted = client.post("/api/v1/batches", json={"jobs": [{"job_id": "slow_1", "service_id": "slow"},
                                                                 {"job_id": "drop_1", "service_id": "drop"}]})
        assert accepted.status_code == 202
        run_id = accepted.json()["run_id"]
        seen: list[tuple[str, dict[str, Any]]] = []
        with client.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for kind, data in sse(stream.iter_lines()):
                seen.append((kind, data))
                if kind == "job_started" and data["job_id"] == "slow_1":
                    # slow_1 is running (its request waits for the gate) and the stream is live
                    assert client.get(f"/api/v1/runs/{run_id}").json()["run"]["status"] == "running"
                    serve_project.gate.set()
                if kind == "run_finished":
                    break
        kinds = [k for k, _ in seen]
        assert kinds[0] == "snapshot" and kinds[-1] == "run_finished"
        assert {"job_started", "file", "job_finished"} <= set(kinds)
        finished = {d["job_id"]: d for k, d in seen if k == "job_finished"}
        assert finished["slow_1"]["status"] == "succeeded" and finished["slow_1"]["files"]["uploaded"] == 1
        files = [d for k, d in seen if k == "file"]
        assert {(f["job_id"], f["status"]) for f in files} == {
            ("slow_1", "uploaded"), ("drop_1", "uploaded"), ("drop_1", "rejected")}
        assert seen[-1][1]["status"] == "failed" and seen[-1][1]["exit_code"] == 1  # bad.json was rejected
        assert kinds.index("job_started") < kinds.index("job_finished")

        # Once over, its stream is the final event alone; the history has the run.
        with client.stream("GET", f"/api/v1/runs/{run_id}/events") as stream:
            assert [k for k, _ in sse(stream.iter_lines())] == ["run_finished"]
        assert client.get("/api/v1/runs").json()["items"][0]["run_id"] == run_id
        assert "/api/v1/batches" in client.get("/openapi.json").json()["paths"]
        assert "module_system_files_total" in client.get("/metrics").text

    # The run is in the history for the CLI too.
    shown = subprocess.run([*serve_command()[:-1], "show", run_id, "--state-dir", str(serve_project.state_dir),
                            "--format", "json"], check=False, capture_output=True, text=True, timeout=60, env=serve_env())
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run"]["run_id"] == run_id


def test_a_token_protects_a_real_server(serve_project: ServeProject) -> None:
    env = {"MODULE_SYSTEM_API_TOKEN": BOTH_TOKEN}
    with running_server(serve_project, env=env) as url:
        assert httpx.get(f"{url}/api/v1/runs").status_code == 401
        ok = httpx.get(f"{url}/api/v1/runs", headers={"Authorization": f"Bearer {BOTH_TOKEN}"})
        assert ok.status_code == 200


def test_serve_refuses_a_public_address_without_a_token(serve_project: ServeProject) -> None:
    result = subprocess.run([*serve_command(), "--host", "0.0.0.0", "--port", "0", "--registry",
                             str(serve_project.registry), "--state-dir", str(serve_project.state_dir)],
                            check=False, capture_output=True, text=True, timeout=60, env=serve_env())
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--host 0.0.0.0" in result.stderr
    assert "MODULE_SYSTEM_API_TOKEN" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_bad_options_with_one_line(serve_project: ServeProject) -> None:
    (serve_project.root / "tokens.txt").write_text("short read\n")
    cases = [
        (["--registry", str(serve_project.root / "missing.yaml")], "missing.yaml"),
        (["--tokens-file", str(serve_project.root / "tokens.txt")], "line 1"),
        (["--rate-limit", "-1"], "--rate-limit"),
        (["--port", "70000"], "--port"),
    ]
    for args, says in cases:
        argv = [*serve_command(), "--registry", str(serve_project.registry), "--state-dir",
                str(serve_project.state_dir), *args]
        result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60, env=serve_env())
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1 and says in result.stderr
        assert "short" not in result.stderr, "a token is never printed"


def test_serve_exits_1_when_the_history_database_cannot_be_used(serve_project: ServeProject) -> None:
    result = subprocess.run([*serve_command(), "--port", "0", "--registry", str(serve_project.registry),
                             "--state-dir", str(serve_project.state_dir),
                             "--history-db", "postgresql://someone:hunter2-secret@127.0.0.1:1/history"],
                            check=False, capture_output=True, text=True, timeout=60, env=serve_env())
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("error: the history database postgresql+psycopg://someone:***@127.0.0.1:1/history")
    assert "hunter2" not in result.stdout + result.stderr and "Traceback" not in result.stderr
