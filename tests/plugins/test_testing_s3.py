"""``python -m module_system.testing s3``: an embedded S3 in one step, as a plugin author starts it.

The command runs in a subprocess; the test reads the environment it prints, uploads with boto3
through exactly those variables, runs ``module-system run`` with them, then stops it with Ctrl-C
(SIGINT).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml


@pytest.fixture()
def embedded_s3() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    proc = subprocess.Popen([sys.executable, "-m", "module_system.testing", "s3", "--bucket", "plugin-dev"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    exported: dict[str, str] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the server is up once the exports are printed
            if line.startswith("export "):
                name, _, value = line[len("export "):].strip().partition("=")
                exported[name] = value
            if "S3_BUCKET" in exported and line.startswith("# registry"):
                break
        assert "S3_BUCKET" in exported, f"no environment printed; stderr: {proc.stderr.read() if proc.stderr else ''}"
        yield proc, exported
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)


def test_prints_the_environment_and_serves_until_ctrl_c(embedded_s3: tuple[subprocess.Popen[str], dict[str, str]],
                                                        tmp_path: Path) -> None:
    proc, env = embedded_s3
    assert env["AWS_ENDPOINT_URL"] == env["S3_URL"] and env["S3_URL"].startswith("http://127.0.0.1:")
    assert env["S3_BUCKET"] == "plugin-dev"
    assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"] and env["AWS_DEFAULT_REGION"]

    session = boto3.session.Session(aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                                    aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                                    region_name=env["AWS_DEFAULT_REGION"])
    s3 = session.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])
    s3.put_object(Bucket=env["S3_BUCKET"], Key="hello.txt", Body=b"hello\n")
    assert s3.get_object(Bucket=env["S3_BUCKET"], Key="hello.txt")["Body"].read() == b"hello\n"

    # The CLI, configured only by the printed environment.
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.csv").write_bytes(b"id,name\n1,alpha\n")
    (tmp_path / "project_registry.yaml").write_text(yaml.safe_dump({"version": 1, "services": {"drop": {
        "type": "local", "source": {"path": str(drop), "min_age_s": 0},
        "destination": {"bucket": "${S3_BUCKET}", "endpoint_url": "${S3_URL}"}}}}))
    (tmp_path / "jobs.json").write_text(json.dumps({"jobs": [{"job_id": "drop_1", "service_id": "drop"}]}))
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODULE_SYSTEM_"))} | env
    done = subprocess.run([str(Path(sys.executable).with_name("module-system")), "run", "--batch-file", "jobs.json"],
                          cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=env["S3_BUCKET"])["Contents"])
    assert keys == ["_manifests/drop/drop_1.json", "data/local/drop/validated/a.csv", "hello.txt"]

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
