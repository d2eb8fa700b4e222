"""The built-in ``sftp`` source through the CLI, against a real SFTP server (tests/servers/sftp.py):
password and key logins, host keys (known_hosts, a pin, a mismatch refused), the recursive
walk, resume after a dropped connection, incremental re-runs, the per-host cap, ``check``."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from modules.sftp_module.main import WINDOW
from tests.e2e.helpers import Project, list_keys, write_big_file
from tests.servers.sftp import SftpServer, new_key

TREE = {"a.csv": b"id\n1\n", "b.csv": b"id\n2\n", "sub/c.csv": b"id\n3\n", "sub/deeper/d.csv": b"id\n4\n"}
CLIENT_TEXT = ed25519.Ed25519PrivateKey.generate().private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()).decode()


def seed(root: Path, files: dict[str, bytes], age_s: float = 60) -> None:
    then = time.time() - age_s
    for name, data in files.items():
        path = root.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (then, then))


def client_key() -> paramiko.PKey:
    return paramiko.Ed25519Key.from_private_key(io.StringIO(CLIENT_TEXT))


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    path = tmp_path / "sftp-root"
    seed(path / "out", TREE)
    return path


@pytest.fixture()
def server(root: Path) -> Iterator[SftpServer]:
    with SftpServer(root, authorized_keys=[client_key()]) as srv:
        yield srv


def registry(project: Project, bucket: str, srv: SftpServer, known_hosts: str | None = "known", *,
             source: dict[str, Any] | None = None, **service: Any) -> None:
    """One ``sftp`` service ``feed`` reading ``/out``; the password through the environment."""
    project.env["SFTP_PASSWORD"] = srv.password
    raw: dict[str, Any] = {"host": "127.0.0.1", "port": srv.port, "user": srv.user, "password": "${SFTP_PASSWORD}",
                           "path": "/out"}
    if known_hosts is not None:
        path = project.root / known_hosts
        if not path.exists():
            path.write_text(srv.known_hosts_line())
        raw["known_hosts"] = str(path)
    raw.update(source or {})
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"feed": {"type": "sftp", "source": {k: v for k, v in raw.items() if v is not None}, **service}},
    })


def run(project: Project, report: str = "report.json") -> tuple[Any, dict[str, Any]]:
    batch = project.write_batch([{"job_id": "j1", "service_id": "feed"}])
    result = project.run("--batch-file", str(batch), "--report", report)
    return result, project.report(report)["jobs"][0]


KEYS = ["data/sftp/feed/validated/a.csv", "data/sftp/feed/validated/b.csv",
        "data/sftp/feed/validated/sub/c.csv", "data/sftp/feed/validated/sub/deeper/d.csv"]


def test_password_login_lands_the_whole_tree(project: Project, s3: Any, bucket: str, server: SftpServer) -> None:
    registry(project, bucket, server)
    result, job = run(project)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list_keys(s3, bucket, "data/") == KEYS
    body = s3.get_object(Bucket=bucket, Key="data/sftp/feed/validated/sub/deeper/d.csv")["Body"].read()
    assert body == TREE["sub/deeper/d.csv"] and job["files"]["uploaded"] == 4
    assert server.logins >= 1 and server.refused_logins == 0


def test_key_login_with_the_key_from_the_environment(project: Project, s3: Any, bucket: str,
                                                     server: SftpServer) -> None:
    project.env["SFTP_KEY_SECRET"] = CLIENT_TEXT  # a secret: checked absent from every output and file
    registry(project, bucket, server, source={"password": None, "private_key": "${SFTP_KEY_SECRET}"})
    result, _ = run(project)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list_keys(s3, bucket, "data/") == KEYS and server.refused_logins == 0


def test_a_pinned_fingerprint_is_enough(project: Project, s3: Any, bucket: str, server: SftpServer) -> None:
    registry(project, bucket, server, known_hosts=None,
             source={"known_hosts": str(project.root / "nothing"), "host_key_fingerprint": server.fingerprint})
    result, _ = run(project)
    assert result.returncode == 0, result.stderr[-2000:]
    assert list_keys(s3, bucket, "data/") == KEYS


@pytest.mark.parametrize("how", ["known_hosts", "pin", "unknown"])
def test_a_wrong_host_key_is_refused_before_logging_in(project: Project, s3: Any, bucket: str,
                                                       server: SftpServer, how: str) -> None:
    impostor = new_key()
    (project.root / "known").write_text(server.known_hosts_line(impostor) if how == "known_hosts" else "")
    source = {"host_key_fingerprint": impostor.fingerprint} if how == "pin" else {}
    registry(project, bucket, server, source=source)
    result, job = run(project)
    assert result.returncode == 1, result.stderr[-2000:]
    reason = "unknown host key" if how == "unknown" else "host key mismatch"
    assert job["status"] == "failed" and reason in job["error"] and server.fingerprint in job["error"]
    assert job["attempts"] == 1, "a host key problem is not retried"
    assert server.logins == 0 and server.refused_logins == 0, "no credentials went to that server"
    assert list_keys(s3, bucket, "data/") == []
    assert reason in result.stdout  # the job summary line says why


def test_a_wrong_password_fails_the_job_with_the_reason(project: Project, s3: Any, bucket: str,
                                                        server: SftpServer) -> None:
    registry(project, bucket, server)
    project.env["SFTP_PASSWORD"] = "wrong-password-for-sftp"
    result, job = run(project)
    assert result.returncode == 1
    assert "login refused for user 'feeder'" in job["error"] and job["attempts"] == 1


def test_a_dropped_download_resumes_through_the_cli(project: Project, s3: Any, bucket: str, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 11)
    root = tmp_path / "resume-root"
    seed(root / "out", {"big.bin": data})
    cut = WINDOW + 64 * 1024  # inside the second window's first block
    with SftpServer(root, drop_after_bytes=cut, drops=1) as srv:
        registry(project, bucket, srv)
        result, _ = run(project)
        offsets, reads = srv.opens_of("out/big.bin"), srv.reads_of("out/big.bin")
        assert srv.drops_done == 1
    assert result.returncode == 0, result.stderr[-2000:]
    assert s3.get_object(Bucket=bucket, Key="data/sftp/feed/validated/big.bin")["Body"].read() == data
    # dropped in the second 1 MiB window: the second try reads on from the end of the first
    assert offsets == [0, WINDOW], (offsets, reads)
    (_, first_served), (second_min, second_served) = reads
    assert second_min == WINDOW, ("resumed, not restarted: no byte before the resume point asked for again", reads)
    assert second_served >= len(data) - WINDOW, reads
    assert first_served < len(data), reads  # the first try was cut off
    assert '"event": "sftp_download_resumed"' in result.stderr


def test_an_incremental_re_run_fetches_only_what_changed(project: Project, s3: Any, bucket: str,
                                                          server: SftpServer, root: Path) -> None:
    registry(project, bucket, server, incremental=True)
    first, _ = run(project, "r1.json")
    assert first.returncode == 0, first.stderr[-2000:]
    opened_before = len(server.opens)
    seed(root / "out", {"b.csv": b"id\n2\n20\n"}, age_s=5)  # changed: size and mtime
    second, job = run(project, "r2.json")
    assert second.returncode == 0, second.stderr[-2000:]
    assert [path for path, _ in server.opens[opened_before:]] == ["/out/b.csv"]
    assert job["files"] == {**job["files"], "uploaded": 1, "skipped_unchanged": 3}
    assert s3.get_object(Bucket=bucket, Key="data/sftp/feed/validated/b.csv")["Body"].read() == b"id\n2\n20\n"


def test_the_per_host_cap_holds_with_more_transfers(project: Project, s3: Any, bucket: str, tmp_path: Path) -> None:
    root = tmp_path / "capped"
    seed(root / "out", {f"f{i}.bin": os.urandom(256 * 1024) for i in range(8)})
    with SftpServer(root, read_delay_s=0.01) as srv:
        registry(project, bucket, srv, transfers=4, limits={"max_connections": 2})
        result, job = run(project)
        peak = srv.peak_sessions
    assert result.returncode == 0, result.stderr[-2000:]
    assert job["files"]["uploaded"] == 8
    assert peak <= 2, f"the server saw {peak} sessions at once"
    assert peak == 2, "the cap is used, not avoided"


def test_check_reports_reachable_and_auth_failed(project: Project, s3: Any, bucket: str, server: SftpServer) -> None:
    registry(project, bucket, server)
    reg = project.root / "project_registry.yaml"
    loaded = yaml.safe_load(reg.read_text())
    good = loaded["services"]["feed"]
    loaded["services"]["bad_login"] = {**good, "source": {**good["source"], "password": "wrong-password-2"}}
    loaded["services"]["no_folder"] = {**good, "source": {**good["source"], "path": "/nope"}}
    reg.write_text(yaml.safe_dump(loaded))
    result = project.cli("check", "--format", "json")
    assert result.returncode == 1, result.stderr[-2000:]
    checks = {c["service_id"]: c for c in json.loads(result.stdout)["services"]}
    assert checks["feed"]["source"] == "reachable"
    assert checks["bad_login"]["source"] == "auth_failed"
    assert checks["no_folder"]["source"] == "missing"
    assert server.opens == [] and list_keys(s3, bucket) == []


LARGE_MB = int(os.environ.get("MODULE_SYSTEM_SFTP_LARGE_FILE_MB", "256"))
#: The CLI process peaks near 85 MB whatever the file's size; one that held the file would pass this.
PEAK_RSS_LIMIT_MB = 200


@pytest.mark.slow
def test_a_large_file_streams_with_flat_memory(project: Project, tmp_path: Path) -> None:
    root = tmp_path / "large-root"
    (root / "out").mkdir(parents=True)
    expected = write_big_file(root / "out" / "big.bin", LARGE_MB)
    landing = tmp_path / "landing"
    with SftpServer(root) as srv:
        project.env["SFTP_PASSWORD"] = srv.password
        (project.root / "known").write_text(srv.known_hosts_line())
        project.write_registry({"version": 1, "services": {"feed": {"type": "sftp", "source": {
            "host": "127.0.0.1", "port": srv.port, "user": srv.user, "password": "${SFTP_PASSWORD}",
            "path": "/out", "known_hosts": str(project.root / "known")},
            "destination": {"type": "local", "path": str(landing)}}}})
        batch = project.write_batch([{"job_id": "big", "service_id": "feed"}])
        rss_file = project.root / "peak_rss_kib"
        script = Path(__file__).with_name("peak_rss.py")
        result = subprocess.run([sys.executable, str(script), str(rss_file), "--batch-file", str(batch)],
                                check=False, cwd=project.root, env={**project.env, "LOG_LEVEL": "INFO"},
                                capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    landed = landing / "data" / "sftp" / "feed" / "validated" / "big.bin"
    assert landed.stat().st_size == LARGE_MB << 20 and sha256_of(landed) == expected
    peak_mb = int(rss_file.read_text()) / 1024
    assert peak_mb < PEAK_RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB for a {LARGE_MB} MB file"
    print(f"\n{LARGE_MB} MB over SFTP: peak RSS of the CLI process {peak_mb:.0f} MB")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
