"""``module-system check`` (issue 13, item 5): one connection to each source and destination, a
verdict per service, exit 0 only when everything answers; nothing downloaded, nothing landed."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.helpers import Project, list_keys


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_check_tells_reachable_auth_failed_missing_and_unusable(project: Project, s3: Any, bucket: str,
                                                                ftp_server: Any, ftp_dir: Path,
                                                                ftp_root: Path, tmp_path: Path) -> None:
    (ftp_dir / "a.csv").write_text("id\n1\n")
    folder = "/" + ftp_dir.relative_to(ftp_root).as_posix()
    registry = yaml.safe_load(project.write_ftp_registry(bucket, ftp_server, folder).read_text())
    services = registry["services"]
    good = services["sales"]
    services["bad_login"] = {**good, "source": {**good["source"], "password": "wrong-password-1"}}
    services["no_folder"] = {**good, "source": {**good["source"], "path": folder + "/nope"}}
    services["no_bucket"] = {"type": "s3", "source": {"bucket": "no-such-source-bucket", "endpoint_url": "${S3_URL}"}}
    services["site_down"] = {"type": "web", "source": {"urls": [f"http://127.0.0.1:{closed_port()}/"]}}
    services["blocked_dest"] = {**good, "destination": {"type": "local", "path": str(tmp_path / "file" / "x")}}
    (tmp_path / "file").write_text("a file, not a folder")
    project.write_registry(registry)
    retr_before = ftp_server.commands.count("RETR")

    result = project.cli("check", "--format", "json")
    assert result.returncode == 1, result.stderr[-2000:]
    checks = {c["service_id"]: c for c in json.loads(result.stdout)["services"]}
    assert checks["sales"]["ok"] and checks["sales"]["destinations"][0]["verdict"] == "reachable"
    assert checks["bad_login"]["source"] == "auth_failed"
    assert checks["no_folder"]["source"] == "missing"
    assert checks["no_bucket"]["source"] == "missing"
    assert checks["site_down"]["source"] == "unreachable"
    assert checks["blocked_dest"]["source"] == "reachable"
    assert checks["blocked_dest"]["destinations"][0]["verdict"] == "unusable"
    assert ftp_server.commands.count("RETR") == retr_before and list_keys(s3, bucket) == []
    assert "wrong-password-1" not in result.stdout + result.stderr

    batch = project.write_batch([{"job_id": "j", "service_id": "sales"}])
    only = project.cli("check", "--batch-file", str(batch))
    assert only.returncode == 0, only.stdout + only.stderr[-2000:]
    assert only.stdout.strip() == "sales  source: reachable  destination s3: reachable"
