"""A large FTP -> S3 upload cut off half-way resumes from its finished parts.

The CLI runs in a subprocess against moto behind the recording proxy. When the proxy
has seen half of the parts land, the process is killed with SIGKILL (no clean-up runs);
the same batch is started again, and the proxy log shows that the second run sent
exactly the parts the state file did not record. Size: ``MODULE_SYSTEM_RESUME_MB``
(default 1024: 25-50 s on a 2-CPU machine, most of it moving the file over FTP twice).
A SIGINT mid-upload (a clean stop) aborts the upload instead: no orphaned parts are left.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.s3_proxy import S3Proxy
from tests.e2e.helpers import Project, write_big_file

SIZE_MB = int(os.environ.get("MODULE_SYSTEM_RESUME_MB", "1024"))
PART_MB = 8
KEY = "data/ftp/big/validated/big.bin"


@pytest.fixture()
def proxy(s3_server) -> Iterator[S3Proxy]:  # noqa: ANN001
    with S3Proxy(s3_server.url) as server:
        yield server


def object_sha256(s3, bucket: str, key: str) -> str:  # noqa: ANN001
    digest = hashlib.sha256()
    for chunk in s3.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(1 << 20):
        digest.update(chunk)
    return digest.hexdigest()


def at_key(proxy: S3Proxy, operation: str, since: int = 0) -> list:
    """``operation``s on the big file's key (not the run's write check of the bucket)."""
    return [r for r in proxy.of(operation, since) if r.key == KEY]


def parts_landed(proxy: S3Proxy, since: int = 0) -> list[int]:
    return sorted(r.part_number for r in proxy.of("UploadPart", since) if r.ok)  # type: ignore[misc]


def big_batch(project: Project, bucket: str, proxy: S3Proxy, ftp_server, ftp_dir: Path,  # noqa: ANN001
              ftp_root: Path) -> Path:
    """A registry with one FTP service landing in ``bucket`` through the proxy, and its batch."""
    project.env.update({"FTP_PORT": str(ftp_server.port), "FTP_PASSWORD": ftp_server.password,
                        "S3_PROXY_URL": proxy.url, "LOG_LEVEL": "INFO"})
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_PROXY_URL}",
                                     "multipart_chunksize_mb": PART_MB},
                     "retry": {"attempts": 3, "backoff_s": 0.05, "max_backoff_s": 0.5}},
        "services": {"big": {"type": "ftp", "source": {
            "host": "127.0.0.1", "port": "${FTP_PORT}", "user": ftp_server.user, "password": "${FTP_PASSWORD}",
            "path": "/" + ftp_dir.relative_to(ftp_root).as_posix()}}},
    })
    return project.write_batch([{"job_id": "big_1", "service_id": "big"}])


def start(project: Project, batch: Path, report: str, out: str) -> subprocess.Popen[bytes]:
    """The CLI on ``batch`` in the background, its output in the file ``out``."""
    args = [sys.executable, "-m", "orchestrator.cli_init", "--batch-file", str(batch), "--log-format", "json",
            "--report", report]
    with open(project.root / out, "wb") as fh:
        return subprocess.Popen(args, cwd=project.root, env=project.env, stdout=fh, stderr=subprocess.STDOUT)


def wait_for_parts(proxy: S3Proxy, proc: subprocess.Popen[bytes], count: int) -> None:
    deadline = time.monotonic() + 600
    while proc.poll() is None and len(parts_landed(proxy)) < count and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_killed_large_upload_resumes_with_the_missing_parts_only(
        project: Project, s3, bucket: str, proxy: S3Proxy, ftp_server, ftp_dir: Path,  # noqa: ANN001
        ftp_root: Path) -> None:
    expected = write_big_file(ftp_dir / "big.bin", SIZE_MB)
    total = -(-SIZE_MB // PART_MB)
    batch = big_batch(project, bucket, proxy, ftp_server, ftp_dir, ftp_root)

    # run 1: SIGKILL once half of the parts have landed
    t0 = time.monotonic()
    proc = start(project, batch, "report1.json", "run1.out")
    wait_for_parts(proxy, proc, total // 2)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, (project.root / "run1.out").read_text()[-2000:]
    killed_after = time.monotonic() - t0
    first_run = parts_landed(proxy)
    [state_file] = (project.root / "temp" / "uploads").glob("*.json")
    state = json.loads(state_file.read_text())
    done = {int(n) for n in state["parts"]}
    assert total // 2 - 8 <= len(done) < total, "the state holds what landed, less at most the parts in flight"
    assert done <= set(first_run)
    assert not at_key(proxy, "CompleteMultipartUpload")

    # run 2: the same batch resumes the same upload
    mark = len(proxy.requests)
    t1 = time.monotonic()
    rerun = project.run("--batch-file", str(batch), "--report", "report2.json", timeout=900)
    resumed_in = time.monotonic() - t1
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    sent = [r.part_number for r in proxy.of("UploadPart", mark)]
    # a part may be sent twice when a try times out under load; what matters is which parts
    assert sorted(set(sent)) == sorted(set(range(1, total + 1)) - done), "only the missing parts are sent"
    assert not at_key(proxy, "CreateMultipartUpload", mark), "the killed upload is resumed, not restarted"
    assert [r.params["uploadId"] for r in at_key(proxy, "CompleteMultipartUpload", mark)] == [state["upload_id"]]
    assert project.report("report2.json")["jobs"][0]["files"]["uploaded"] == 1

    head = s3.head_object(Bucket=bucket, Key=KEY)
    assert head["ContentLength"] == SIZE_MB << 20 and head["Metadata"]["sha256"] == expected
    assert object_sha256(s3, bucket, KEY) == expected, "byte-identical"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert list((project.root / "temp" / "uploads").iterdir()) == []
    s3.delete_object(Bucket=bucket, Key=KEY)  # moto keeps objects in this process's memory
    print(f"\n{SIZE_MB} MiB, {total} parts of {PART_MB} MiB: killed after {killed_after:.1f}s with "
          f"{len(first_run)} parts landed ({len(done)} recorded); the re-run sent {len(sent)} parts "
          f"and finished in {resumed_in:.1f}s")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_mid_upload_aborts_it_and_exits_130(project: Project, s3, bucket: str,  # noqa: ANN001
                                                   proxy: S3Proxy, ftp_server, ftp_dir: Path,  # noqa: ANN001
                                                   ftp_root: Path) -> None:
    size_mb, total = 128, 128 // PART_MB
    expected = write_big_file(ftp_dir / "big.bin", size_mb)
    batch = big_batch(project, bucket, proxy, ftp_server, ftp_dir, ftp_root)
    proc = start(project, batch, "report1.json", "run1.out")
    wait_for_parts(proxy, proc, 4)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, (project.root / "run1.out").read_text()[-2000:]
    [job] = project.report("report1.json")["jobs"]
    assert job["status"] == "cancelled" and job["files"]["failed"] == 1
    assert not at_key(proxy, "CompleteMultipartUpload") and len(at_key(proxy, "AbortMultipartUpload")) == 1
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == [], "no orphaned parts"
    assert list((project.root / "temp" / "uploads").glob("*.json")) == []
    with pytest.raises(Exception, match="404|Not Found"):
        s3.head_object(Bucket=bucket, Key=KEY)  # nothing half-uploaded under the final key

    mark = len(proxy.requests)
    rerun = project.run("--batch-file", str(batch), "--report", "report2.json")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert sorted({r.part_number for r in proxy.of("UploadPart", mark)}) == list(range(1, total + 1))
    assert object_sha256(s3, bucket, KEY) == expected
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    s3.delete_object(Bucket=bucket, Key=KEY)
