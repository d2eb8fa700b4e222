"""Every destination is checked once before any job starts (issue 10, item 22).

A destination that cannot be written (a missing bucket, no credentials, credentials the
store refuses, no write permission, an endpoint that does not answer) stops the run
before it starts: exit 2, one line naming the service(s), the bucket and the reason, no
secret, nothing uploaded, no job log. And a job whose files failed no longer says "see
the manifest" when its manifest could not be written either.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from destinations.s3 import PROBE_KEY
from module_system.testing import LocalHttpServer
from tests.e2e.helpers import Project, list_keys
from tests.servers.s3_proxy import ProxyRequest, S3Proxy

#: A destination secret handed through the environment: it must never be printed.
DEST_SECRET = "dest-secret-5b1e0c7a9d"


def registry(project: Project, services: dict[str, tuple[str, str]], folder: Path) -> Path:
    """One localdir service per ``name: (bucket, endpoint)``, credentials from the environment."""
    project.env["DEST_SECRET_KEY"] = DEST_SECRET
    return project.write_registry({
        "version": 1,
        "defaults": {"retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.02}, "timeout_s": 5},
        "services": {name: {"type": "localdir", "source": {"path": str(folder)},
                            "destination": {"bucket": bucket, "endpoint_url": endpoint,
                                            "access_key_id": "testing", "secret_access_key": "${DEST_SECRET_KEY}"}}
                     for name, (bucket, endpoint) in services.items()},
    })


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    path = tmp_path / "source"
    path.mkdir()
    (path / "one.csv").write_text("a\n1\n")
    return path


def run(project: Project, services: dict[str, tuple[str, str]], folder: Path) -> tuple[int, str]:
    """Run one job per service; returns the exit code and the only stderr line that is not a log record."""
    registry(project, services, folder)
    batch = project.write_batch([{"job_id": f"{name}_1", "service_id": name} for name in services])
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1, result.stderr[-3000:]
    return result.returncode, lines[0]


def assert_nothing_ran(project: Project) -> None:
    logs = project.root / "temp" / "logs"
    assert [p.name for p in logs.iterdir()] == ["system_orchestrator_job_executor.log"], "no job log"
    events = [json.loads(line)["event"] for line in (logs / "system_orchestrator_job_executor.log").open()]
    assert "run_not_started" in events and "job_started" not in events
    assert not (project.root / "report.json").exists()
    assert not list((project.root / "temp").glob("failed_jobs_*.json"))
    assert not (project.root / "temp" / "work").exists()


def test_a_missing_bucket_stops_the_run_before_any_job(project: Project, s3, s3_server, bucket: str,
                                                       folder: Path) -> None:
    code, line = run(project, {"good": (bucket, s3_server.url), "lost": ("no-such-bucket-77", s3_server.url)},
                     folder)
    assert code == 2
    assert line == ("error: project_registry.yaml: service 'lost': destination bucket "
                    f"'no-such-bucket-77' at {s3_server.url} cannot be written: the bucket does not exist (404)")
    assert list_keys(s3, bucket) == [], "the good destination's job did not run either"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], "its write check left nothing"
    assert_nothing_ran(project)


def test_no_credentials_stop_the_run(project: Project, s3_server, bucket: str, folder: Path) -> None:
    project.write_registry({
        "version": 1,
        "services": {"sales": {"type": "localdir", "source": {"path": str(folder)},
                               "destination": {"bucket": bucket, "endpoint_url": s3_server.url}}},
    })
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        project.env.pop(name)
    project.env.update({"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": "/nonexistent",
                        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"})
    batch = project.write_batch([{"job_id": "sales_1", "service_id": "sales"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert line.endswith(f"service 'sales': destination bucket '{bucket}' at {s3_server.url} cannot be written: "
                         "no credentials found: set the destination's access_key_id and secret_access_key, "
                         "or AWS credentials in the environment")
    assert_nothing_ran(project)


class RefusingStore:
    """An S3 endpoint on 127.0.0.1 that answers each method with a fixed status and S3 error code,
    as a store does for credentials it does not know (403 InvalidAccessKeyId) or a write it forbids."""

    def __init__(self, answers: dict[str, tuple[int, str | None]]) -> None:
        self.requests: list[tuple[str, str]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def answer(self) -> None:
                owner.requests.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                status, code = answers.get(self.command, (200, None))
                body = b"" if code is None or self.command == "HEAD" else (
                    f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                    f"<Message>refused</Message></Error>").encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._listener = LocalHttpServer(Handler)
        self.url = self._listener.url

    def close(self) -> None:
        self._listener.stop()


@pytest.fixture()
def store() -> Iterator[Callable[[dict[str, tuple[int, str | None]]], RefusingStore]]:
    made: list[RefusingStore] = []

    def make(answers: dict[str, tuple[int, str | None]]) -> RefusingStore:
        made.append(RefusingStore(answers))
        return made[-1]

    yield make
    for server in made:
        server.close()


def test_credentials_the_store_refuses_stop_the_run(project: Project, store, folder: Path) -> None:
    refusing = store({method: (403, "InvalidAccessKeyId") for method in ("HEAD", "GET", "PUT", "POST", "DELETE")})
    code, line = run(project, {"sales": ("landing", refusing.url)}, folder)
    assert code == 2
    assert line.endswith(f"service 'sales': destination bucket 'landing' at {refusing.url} cannot be written: "
                         "access denied (HTTP 403: wrong credentials, or no s3:ListBucket permission on the bucket)")
    assert [m for m, _ in refusing.requests] == ["HEAD"], "a refusal is not retried"
    assert_nothing_ran(project)


def test_a_bucket_that_refuses_writes_stops_the_run(project: Project, store, folder: Path) -> None:
    read_only = store({"POST": (403, "AccessDenied")})  # HeadBucket passes, creating an upload is denied
    code, line = run(project, {"a": ("landing", read_only.url), "b": ("landing", read_only.url)}, folder)
    assert code == 2
    assert line.endswith(f"services 'a', 'b': destination bucket 'landing' at {read_only.url} cannot be written: "
                         "access denied (AccessDenied)")
    assert read_only.requests == [("HEAD", "/landing"), ("POST", f"/landing/{PROBE_KEY}?uploads")], \
        "one destination shared by two services is checked once"
    assert_nothing_ran(project)


def test_an_endpoint_that_does_not_answer_stops_the_run_after_retries(project: Project, folder: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, line = run(project, {"sales": ("landing", f"http://127.0.0.1:{port}")}, folder)
    assert code == 2
    assert line.endswith(f"service 'sales': destination bucket 'landing' at http://127.0.0.1:{port} cannot be "
                         "written: cannot reach the endpoint after 2 tries (EndpointConnectionError)")
    assert_nothing_ran(project)


# ---------------------------------------------------------------------------- the job's error


@pytest.fixture()
def proxy(s3_server) -> Iterator[S3Proxy]:
    with S3Proxy(s3_server.url) as server:
        yield server


def test_a_job_does_not_point_at_a_manifest_that_could_not_be_written(project: Project, s3, bucket: str,
                                                                      proxy: S3Proxy, folder: Path) -> None:
    def refuse_puts(request: ProxyRequest) -> str | None:  # the check passes; every object write fails
        return "503" if request.operation == "PutObject" else None

    proxy.fault = refuse_puts
    registry(project, {"sales": (bucket, proxy.url)}, folder)
    batch = project.write_batch([{"job_id": "sales_1", "service_id": "sales"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 1, result.stderr[-2000:]
    [job] = project.report()["jobs"]
    assert job["status"] == "failed" and job["files"]["failed"] == 1
    assert "see the manifest" not in job["error"]
    assert job["error"] == ("1 file(s) failed (not fetched or not uploaded); the manifest could not be written "
                            "either: upload of _manifests/sales/sales_1.json failed: SlowDown")
    assert list_keys(s3, bucket) == []


def test_a_write_check_whose_answer_was_lost_leaves_no_upload_behind(project: Project, s3, bucket: str,
                                                                    proxy: S3Proxy, folder: Path) -> None:
    lost: list[ProxyRequest] = []

    def lose_first_check(request: ProxyRequest) -> str | None:  # created, but the answer never arrives
        if request.operation == "CreateMultipartUpload" and request.key == PROBE_KEY and not lost:
            lost.append(request)
            return "reset_after"
        return None

    proxy.fault = lose_first_check
    registry(project, {"sales": (bucket, proxy.url)}, folder)
    batch = project.write_batch([{"job_id": "sales_1", "service_id": "sales"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 0, result.stderr[-2000:]
    checks = [r for r in proxy.requests if PROBE_KEY in (r.key, r.params.get("prefix"))]
    assert [r.operation for r in checks] == ["CreateMultipartUpload", "CreateMultipartUpload",
                                             "ListMultipartUploads", "AbortMultipartUpload", "AbortMultipartUpload"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], "the lost one is aborted too"
    assert list_keys(s3, bucket) == ["_manifests/sales/sales_1.json", "data/localdir/sales/validated/one.csv"]
