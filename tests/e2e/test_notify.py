"""The registry's ``notify`` webhooks, through the CLI, against a local HTTP receiver (http.server
in a thread): what is sent when, retries, a dead receiver, and no secret anywhere."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Project
from tests.e2e.test_local_source import seed
from tests.servers.api_server import ApiReply, ApiRequest, ApiServer, json_reply

TOKEN = "T0k3n-hook-9f8e7d6c5b4a-never-logged"


@pytest.fixture()
def receiver() -> Iterator[ApiServer]:
    with ApiServer() as server:
        server.route(f"/hooks/{TOKEN}/fail", lambda req: json_reply({"ok": True}))
        server.route(f"/hooks/{TOKEN}/always", lambda req: json_reply({"ok": True}))
        yield server


def project_with_hooks(project: Project, tmp_path: Path, hooks: dict[str, str], fail: bool,
                       retry: dict[str, Any] | None = None) -> Path:
    """A local -> local service; ``fail``: a second job whose folder does not exist.
    ``hooks``: env var name -> ``on``; the URLs go through the environment, as a token would."""
    seed(tmp_path / "drop", {"a.csv": b"id\n1\n"})
    project.env["LANDING"] = str(tmp_path / "landing")
    project.write_registry({
        "version": 1,
        "notify": {"webhooks": [{"url": f"${{{name}}}", "on": on} for name, on in hooks.items()],
                   "retry": retry or {"attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 5},
        "services": {
            "drop": {"type": "local", "source": {"path": str(tmp_path / "drop")},
                     "destination": {"type": "local", "path": "${LANDING}"}},
            "gone": {"type": "local", "source": {"path": str(tmp_path / "nope")}, "retry": {"attempts": 1},
                     "destination": {"type": "local", "path": "${LANDING}", "prefix": "gone/"}},
        },
    })
    jobs = [{"job_id": "drop_1", "service_id": "drop"}]
    if fail:
        jobs.append({"job_id": "gone_1", "service_id": "gone"})
    return project.write_batch(jobs)


def bodies(server: ApiServer, path: str) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in server.requests_to(path) if r.method == "POST"]


def assert_token_nowhere(project: Project, result: Any) -> None:
    texts = [result.stdout, result.stderr] + [p.read_text(errors="replace") for p in project.root.rglob("*")
                                              if p.is_file() and p.suffix in (".json", ".log")]
    assert not any(TOKEN in text for text in texts), "a webhook URL's token leaked"


def test_failure_hooks_stay_quiet_on_success_and_always_hooks_get_the_summary(
        project: Project, tmp_path: Path, receiver: ApiServer) -> None:
    project.env.update({"HOOK_FAIL_TOKEN_URL": f"{receiver.url}/hooks/{TOKEN}/fail",
                        "HOOK_ALWAYS_TOKEN_URL": f"{receiver.url}/hooks/{TOKEN}/always"})
    batch = project_with_hooks(project, tmp_path, {"HOOK_FAIL_TOKEN_URL": "failure", "HOOK_ALWAYS_TOKEN_URL": "always"},
                               fail=False)
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert bodies(receiver, f"/hooks/{TOKEN}/fail") == []
    [summary] = bodies(receiver, f"/hooks/{TOKEN}/always")
    report = project.report()
    assert summary["run_id"] == report["run_id"] and summary["exit_code"] == 0 and summary["status"] == "succeeded"
    assert summary["totals"] == report["totals"] and summary["jobs_not_succeeded"] == []
    assert summary["text"].startswith(f"module_system run {report['run_id']} succeeded (exit code 0)")
    assert_token_nowhere(project, result)


def test_a_failed_run_is_posted_to_both(project: Project, tmp_path: Path, receiver: ApiServer) -> None:
    project.env.update({"HOOK_FAIL_TOKEN_URL": f"{receiver.url}/hooks/{TOKEN}/fail",
                        "HOOK_ALWAYS_TOKEN_URL": f"{receiver.url}/hooks/{TOKEN}/always"})
    batch = project_with_hooks(project, tmp_path, {"HOOK_FAIL_TOKEN_URL": "failure", "HOOK_ALWAYS_TOKEN_URL": "always"},
                               fail=True)
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 1, result.stderr[-2000:]
    [summary] = bodies(receiver, f"/hooks/{TOKEN}/fail")
    assert bodies(receiver, f"/hooks/{TOKEN}/always") == [summary]
    assert summary["status"] == "failed" and summary["exit_code"] == 1
    assert [(j["job_id"], j["status"]) for j in summary["jobs_not_succeeded"]] == [("gone_1", "failed")]
    assert "- gone_1 (gone): failed: " in summary["text"], "Slack shows the text field"
    assert summary["totals"]["jobs"] == {"succeeded": 1, "failed": 1, "timed_out": 0, "cancelled": 0}
    request = receiver.requests_to(f"/hooks/{TOKEN}/fail")[0]
    assert request.headers["content-type"] == "application/json"
    assert_token_nowhere(project, result)


def test_a_receiver_down_for_two_tries_still_gets_it(project: Project, tmp_path: Path, receiver: ApiServer) -> None:
    def flaky(req: ApiRequest) -> ApiReply:
        return json_reply({"error": "warming up"}, 503) if req.count <= 2 else json_reply({"ok": True})

    receiver.route(f"/hooks/{TOKEN}/flaky", flaky)
    project.env["HOOK_TOKEN_URL"] = f"{receiver.url}/hooks/{TOKEN}/flaky"
    batch = project_with_hooks(project, tmp_path, {"HOOK_TOKEN_URL": "failure"}, fail=True)
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 1
    posts = receiver.requests_to(f"/hooks/{TOKEN}/flaky")
    assert len(posts) == 3 and posts[0].body == posts[2].body, "two 503s, then the same summary delivered"
    assert "notify_failed" not in result.stderr
    assert_token_nowhere(project, result)


def test_a_dead_receiver_is_a_warning_not_an_exit_code(project: Project, tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    project.env["HOOK_TOKEN_URL"] = f"http://127.0.0.1:{port}/hooks/{TOKEN}"
    batch = project_with_hooks(project, tmp_path, {"HOOK_TOKEN_URL": "always"}, fail=False,
                               retry={"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.02})
    result = project.run("--batch-file", str(batch), "--log-format", "console")
    assert result.returncode == 0, "a webhook that cannot be reached does not change the exit code"
    [warning] = [line for line in result.stderr.splitlines() if "notify_failed" in line]
    assert f"http://127.0.0.1:{port}/..." in warning and "cannot connect" in warning
    executor_log = (project.root / "temp" / "logs" / "system_orchestrator_job_executor.log").read_text()
    assert '"notify_failed"' in executor_log
    assert_token_nowhere(project, result)


def test_a_webhook_that_is_not_a_url_is_a_config_error(project: Project, tmp_path: Path) -> None:
    project.env["HOOK_TOKEN_URL"] = f"ftp://example.invalid/{TOKEN}"
    batch = project_with_hooks(project, tmp_path, {"HOOK_TOKEN_URL": "sometimes"}, fail=False)
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines), result.stderr
    assert any("key 'notify.webhooks.0.url'" in line and "^https?://" in line for line in lines)
    assert any("key 'notify.webhooks.0.on'" in line and "failure, always" in line for line in lines)
    assert TOKEN not in result.stderr
