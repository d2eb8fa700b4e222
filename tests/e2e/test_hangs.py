"""Servers that drip one byte at a time (issue 10, item 9), through the CLI.

Every remote read runs under the transfer watchdog (common/transfer_watchdog.py):
Ctrl-C and ``--monitor-duration`` cut a read in flight, a second Ctrl-C ends the
process at once, and a transfer under 1 KiB/s over ``timeout_s`` is cut as a transient
failure. The servers are real (http.server for ``api`` and ``web``, pyftpdlib for
``ftp``, the S3 proxy in front of moto for ``s3``); only their pace is hostile.
Durations are never asserted: a generous subprocess timeout is the guard.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from tests.servers.s3_proxy import S3Proxy
from module_system.testing import FtpServer, LocalHttpServer
from tests.e2e.helpers import Project, assert_no_secrets, list_keys

#: The guard on every CLI run: far above what a run should take, far below a hang.
GUARD_S = 90
DRIP_BODY = 50_000


class DripServer:
    """``/drip/...`` answers 200 with a Content-Length of DRIP_BODY bytes and sends one byte
    every 0.2 s; any other path answers at once. ``/...html`` paths are text/html, the rest JSON.
    ``dripping`` is set once a drip has begun."""

    def __init__(self) -> None:
        owner = self
        self.dripping = threading.Event()
        self.stop = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                html = self.path.split("?")[0].endswith(".html")
                body = b"<html><body><p>hello</p></body></html>" if html else b'{"data": [1]}'
                drip = self.path.startswith("/drip/")
                self.send_response(200)
                self.send_header("Content-Type", "text/html" if html else "application/json")
                self.send_header("Content-Length", str(DRIP_BODY if drip else len(body)))
                self.end_headers()
                if not drip:
                    self.wfile.write(body)
                    return
                owner.dripping.set()
                try:
                    for _ in range(DRIP_BODY):
                        if owner.stop.wait(0.2):
                            return
                        self.wfile.write(b" ")
                        self.wfile.flush()
                except OSError:
                    return

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._listener = LocalHttpServer(Handler)
        self.url = self._listener.url

    def close(self) -> None:
        self.stop.set()
        self._listener.stop()


@pytest.fixture()
def drip() -> Iterator[DripServer]:
    server = DripServer()
    yield server
    server.close()


def http_registry(project: Project, bucket: str, drip: DripServer, kind: str, timeout_s: float,
                  paths: list[str]) -> None:
    if kind == "api":
        source: dict[str, Any] = {"base_url": drip.url, "endpoints": paths}
    else:
        source = {"urls": [drip.url + p for p in paths], "obey_robots": False}
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}, "timeout_s": timeout_s,
                     "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.1}},
        "services": {"slow": {"type": kind, "source": source, "transfers": 2}},
    })


def start(project: Project, *args: str) -> subprocess.Popen[str]:
    batch = project.write_batch([{"job_id": "slow_1", "service_id": "slow"}])
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli_init", "--batch-file", str(batch),
                             "--report", "report.json", *args], cwd=project.root, env=project.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(project: Project, proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=GUARD_S)
    assert_no_secrets(project.secrets(), {"stdout": out, "stderr": err}, [*project.root.glob("*.json")])
    return proc.returncode, out, err


def failed_jobs_file(project: Project) -> dict[str, Any]:
    report = project.report()
    path = Path(report["failed_jobs_file"])
    return json.loads((path if path.is_absolute() else project.root / path).read_text())


def job(project: Project) -> dict[str, Any]:
    return project.report()["jobs"][0]


@pytest.mark.parametrize("kind", ["api", "web"])
def test_ctrl_c_cuts_a_dripping_http_read(project: Project, bucket: str, drip: DripServer, kind: str) -> None:
    http_registry(project, bucket, drip, kind, timeout_s=60, paths=["/drip/page.html"])
    proc = start(project)
    assert drip.dripping.wait(GUARD_S), "the CLI never reached the dripping server"
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(project, proc)
    assert code == 130, err
    assert job(project)["status"] == "cancelled"
    assert [j["job_id"] for j in failed_jobs_file(project)["jobs"]] == ["slow_1"]


def test_a_second_ctrl_c_exits_at_once(project: Project, s3_server, bucket: str,  # noqa: ANN001
                                       drip: DripServer) -> None:
    """The first Ctrl-C cannot finish at once (the destination never answers the upload; the
    stop grace would end it after 5 s), the second ends the process there and then."""
    uploading = threading.Event()

    def hang_puts(request: Any) -> str | None:
        if request.operation == "PutObject":
            uploading.set()
            return "hang"
        return None

    with S3Proxy(s3_server.url, fault=hang_puts) as proxy:
        project.write_registry({
            "version": 1,
            "defaults": {"destination": {"bucket": bucket, "endpoint_url": proxy.url}, "timeout_s": 60,
                         "retry": {"attempts": 1}},
            "services": {"slow": {"type": "api", "source": {"base_url": drip.url, "endpoints": ["/fast/a.json"]}}},
        })
        proc = start(project)
        assert uploading.wait(GUARD_S), "the CLI never reached the upload"
        proc.send_signal(signal.SIGINT)
        assert proc.stderr is not None
        for line in proc.stderr:  # JSON log lines: wait until the first interrupt is being handled
            if "run_stopping" in line:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=GUARD_S)
    assert proc.returncode == 130, err
    assert "second interrupt; exiting now" in err
    assert "Traceback" not in err
    assert not (project.root / "report.json").exists()


def test_monitor_duration_cuts_a_dripping_read(project: Project, bucket: str, drip: DripServer) -> None:
    http_registry(project, bucket, drip, "api", timeout_s=60, paths=["/drip/a.json"])
    code, _, err = finish(project, start(project, "--monitor-duration", "2"))
    assert code == 1, err
    assert job(project)["status"] == "timed_out"
    assert project.report()["failed_jobs_file"]


def test_a_too_slow_page_fails_and_the_others_land(project: Project, s3, bucket: str,  # noqa: ANN001
                                                    drip: DripServer) -> None:
    http_registry(project, bucket, drip, "api", timeout_s=1, paths=["/fast/a.json", "/drip/b.json"])
    code, _, err = finish(project, start(project))
    assert code == 1, err
    result = job(project)
    assert result["status"] == "failed"
    assert result["files"]["uploaded"] == 1 and result["files"]["failed"] == 1
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="_manifests/slow/slow_1.json")["Body"].read())
    failed = [f for f in manifest["files"] if f["status"] == "failed"]
    assert "too slow" in failed[0]["errors"][0]["message"], failed
    assert not [k for k in list_keys(s3, bucket) if "b.json" in k or "drip" in k], "a cut file never lands"


class DrippingHeaders:
    """An HTTP server that answers its status line one byte every 0.2 s (nothing can cut that
    read: it happens inside requests before a response object exists)."""

    def __init__(self) -> None:
        self.banner = DrippingBanner(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 100_000)
        self.url = f"http://127.0.0.1:{self.banner.port}"

    def close(self) -> None:
        self.banner.close()


@pytest.mark.parametrize("how", ["sigint", "monitor"])
def test_a_job_stuck_past_the_grace_is_abandoned(project: Project, bucket: str, how: str) -> None:
    server = DrippingHeaders()
    try:
        project.write_registry({
            "version": 1,
            "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}, "timeout_s": 60},
            "services": {"slow": {"type": "api", "source": {"base_url": server.url, "endpoints": ["/x"]}}},
        })
        if how == "sigint":
            proc = start(project)
            assert server.banner.greeted.wait(GUARD_S)
            proc.send_signal(signal.SIGINT)
        else:
            proc = start(project, "--monitor-duration", "1")
        code, _, err = finish(project, proc)
    finally:
        server.close()
    assert code == (130 if how == "sigint" else 1), err
    result = job(project)
    assert result["status"] == ("cancelled" if how == "sigint" else "timed_out")
    assert "abandoned" in result["error"]
    assert [j["job_id"] for j in failed_jobs_file(project)["jobs"]] == ["slow_1"]


# ---------------------------------------------------------------------- ftp


@pytest.fixture()
def dripping_ftp(tmp_path: Path) -> Iterator[tuple[FtpServer, threading.Event]]:
    """pyftpdlib whose downloads (not listings) send 10 bytes a second (its ThrottledDTPHandler)."""
    from pyftpdlib.handlers import ThrottledDTPHandler
    from pyftpdlib.handlers.ftp.producers import FileProducer

    root = tmp_path / "ftp"
    (root / "out").mkdir(parents=True)
    (root / "out" / "big.csv").write_bytes(b"a,b\n" + b"1,2\n" * 20_000)
    server = FtpServer(root)
    started = threading.Event()

    class Slow(ThrottledDTPHandler):  # type: ignore[misc]
        write_limit = 10

        def push_with_producer(self, producer: Any) -> None:
            if isinstance(producer, FileProducer):
                started.set()
            else:
                self.write_limit = 0
            super().push_with_producer(producer)

    server._server.handler.dtp_handler = Slow
    yield server, started
    server.stop()


def ftp_registry(project: Project, bucket: str, server: FtpServer, timeout_s: float) -> None:
    project.write_ftp_registry(bucket, server, "/out", service_id="slow", timeout_s=timeout_s,
                               retry={"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.1})


def test_ctrl_c_cuts_a_dripping_ftp_download(project: Project, bucket: str,
                                             dripping_ftp: tuple[FtpServer, threading.Event]) -> None:
    server, started = dripping_ftp
    ftp_registry(project, bucket, server, timeout_s=60)
    proc = start(project)
    assert started.wait(GUARD_S)
    proc.send_signal(signal.SIGINT)
    code, _, err = finish(project, proc)
    assert code == 130, err
    assert job(project)["status"] == "cancelled"


def test_a_too_slow_ftp_download_fails(project: Project, bucket: str,
                                       dripping_ftp: tuple[FtpServer, threading.Event]) -> None:
    server, _ = dripping_ftp
    ftp_registry(project, bucket, server, timeout_s=1)
    code, _, err = finish(project, start(project))
    assert code == 1, err
    assert job(project)["files"]["failed"] == 1


class DrippingBanner:
    """A TCP server that greets each client with ``banner`` (an FTP one by default), one byte
    every 0.2 s; ``greeted`` is set once a client is being greeted."""

    def __init__(self, banner: bytes = b"220 " + b"welcome " * 1000) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.text = banner
        self.closed = threading.Event()
        self.greeted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        self.greeted.set()
        with conn:
            for byte in self.text:
                if self.closed.wait(0.2):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


def test_an_ftp_server_dripping_its_banner_is_cut(project: Project, bucket: str) -> None:
    banner = DrippingBanner()
    try:
        project.env.update({"FTP_PORT": str(banner.port), "FTP_PASSWORD": "unused-password"})
        project.write_registry({
            "version": 1,
            "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}, "timeout_s": 1,
                         "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.1}},
            "services": {"slow": {"type": "ftp", "source": {"host": "127.0.0.1", "port": "${FTP_PORT}",
                                                             "password": "${FTP_PASSWORD}"}}},
        })
        code, _, err = finish(project, start(project))
    finally:
        banner.close()
    assert code == 1, err
    assert job(project)["status"] == "failed"
    assert "too slow" in job(project)["error"]


# ---------------------------------------------------------------------- s3


def test_ctrl_c_cuts_a_dripping_s3_download(project: Project, s3, s3_server, bucket: str) -> None:  # noqa: ANN001
    s3.put_object(Bucket=bucket, Key="in/a.csv", Body=b"a,b\n" + b"1,2\n" * 5000)
    dripping = threading.Event()

    def rule(request: Any) -> str | None:
        if request.operation == "GetObject":
            dripping.set()
            return "drip"
        return None

    with S3Proxy(s3_server.url, fault=rule) as proxy:
        project.write_registry({
            "version": 1,
            "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}, "timeout_s": 60},
            "services": {"slow": {"type": "s3", "source": {"bucket": bucket, "prefix": "in/",
                                                            "endpoint_url": proxy.url}}},
        })
        proc = start(project)
        assert dripping.wait(GUARD_S)
        proc.send_signal(signal.SIGINT)
        code, _, err = finish(project, proc)
    assert code == 130, err
    assert job(project)["status"] == "cancelled"
