"""A full temp filesystem (issue 10, item 15), through the CLI, on a real 1 MiB tmpfs.

The project's ``temp`` folder (work files, logs, the failed-jobs file) is a tmpfs
mount: a file larger than it fails with "disk full" and is not retried, the smaller
files after it still land, the condition is logged once, and when the disk is full to
the last byte the failed-jobs file is one error line, not a crash. Mounting needs root
(CI runs as root); elsewhere the tests are skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from module_system.testing import FtpServer
from tests.e2e.helpers import Project, list_keys

SMALL = b"a,b\n" + b"1,2\n" * 2000  # 8 KB: fits
BIG = os.urandom(3 << 20)            # 3 MiB: cannot fit in 1 MiB


@pytest.fixture()
def small_temp(project: Project) -> Iterator[Path]:
    """``temp`` under the project is a 1 MiB tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    temp = project.root / "temp"
    temp.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(temp)], check=True)
    try:
        yield temp
    finally:
        subprocess.run(["umount", "-l", str(temp)], check=False)


def run(project: Project, service: dict, bucket: str) -> tuple[subprocess.CompletedProcess[str], dict]:  # type: ignore[type-arg]
    project.env["LOG_LEVEL"] = "INFO"
    project.write_registry({
        "version": 1,
        # One transfer at a time: the temp dir must hold only the file in hand (with N transfers
        # it must hold N files at once, which a 1 MiB disk cannot, so which file fails would vary).
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.1}, "transfers": 1},
        "services": {"full": service},
    })
    batch = project.write_batch([{"job_id": "full_1", "service_id": "full"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json", timeout=90)
    assert (project.root / "report.json").exists(), result.stderr[-3000:]
    return result, project.report()


def landed(s3, bucket: str, source_bucket: str | None = None) -> list[str]:  # noqa: ANN001
    keys = [k for k in list_keys(s3, bucket) if not k.startswith(("_manifests/", "in/"))]
    return sorted(k.rsplit("/", 1)[-1] for k in keys)


def disk_full_lines(project: Project, result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if '"disk_full"' in line]


def test_s3_source_goes_on_after_a_file_that_does_not_fit(project: Project, s3, bucket: str,  # noqa: ANN001
                                                           small_temp: Path) -> None:
    s3.put_object(Bucket=bucket, Key="in/a_big.csv", Body=BIG)
    for name in ("b_small.csv", "c_small.csv"):
        s3.put_object(Bucket=bucket, Key=f"in/{name}", Body=SMALL)
    result, report = run(project, {"type": "s3", "source": {"bucket": bucket, "prefix": "in/",
                                                            "endpoint_url": "${S3_URL}"}}, bucket)
    assert result.returncode == 1, result.stderr
    job = report["jobs"][0]
    assert job["files"]["uploaded"] == 2 and job["files"]["failed"] == 1
    assert landed(s3, bucket) == ["b_small.csv", "c_small.csv"]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="_manifests/full/full_1.json")["Body"].read())
    failed = [f for f in manifest["files"] if f["status"] == "failed"]
    message = failed[0]["errors"][0]["message"]
    assert message.startswith("disk full") and str(small_temp) in message
    assert len(disk_full_lines(project, result)) == 1


def test_ftp_does_not_take_a_full_disk_for_the_network(project: Project, s3, bucket: str,  # noqa: ANN001
                                                        small_temp: Path, tmp_path: Path) -> None:
    root = tmp_path / "ftproot"
    (root / "out").mkdir(parents=True)
    (root / "out" / "a_big.csv").write_bytes(BIG)
    (root / "out" / "b_small.csv").write_bytes(SMALL)
    with FtpServer(root) as server:
        project.env.update({"FTP_PORT": str(server.port), "FTP_PASSWORD": server.password})
        result, report = run(project, {"type": "ftp", "source": {
            "host": "127.0.0.1", "port": "${FTP_PORT}", "user": server.user, "password": "${FTP_PASSWORD}",
            "path": "/out"}}, bucket)
        retrs = server.retrs_of("out/a_big.csv")
    assert result.returncode == 1, result.stderr
    assert retrs == [0], "a full disk is not retried"
    assert report["jobs"][0]["files"]["uploaded"] == 1 and report["jobs"][0]["files"]["failed"] == 1
    assert report["jobs"][0]["attempts"] == 1
    assert landed(s3, bucket) == ["b_small.csv"]
    assert "connection failed" not in result.stderr


def test_a_disk_full_to_the_last_byte_still_gives_the_report(project: Project, s3, bucket: str,  # noqa: ANN001
                                                             small_temp: Path) -> None:
    s3.put_object(Bucket=bucket, Key="in/b_small.csv", Body=SMALL)
    filler = small_temp / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    result, report = run(project, {"type": "s3", "source": {"bucket": bucket, "prefix": "in/",
                                                            "endpoint_url": "${S3_URL}"}}, bucket)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "error: cannot write the failed-jobs file" in result.stderr
    assert result.stderr.count("error: cannot write log file") <= 1  # once, not per record
    assert report["failed_jobs_file"] is None
    assert report["jobs"][0]["files"]["failed"] == 1
