"""Ctrl-C in the middle of a 2,000-file run: exit 130, nothing half-done, the re-run does the rest.

Four ``localdir`` jobs of 500 tiny files each run four at a time, into moto behind the
recording proxy (no faults: it is the progress meter and the witness). SIGINT is sent
once 40% of the files have landed.
"""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.s3_proxy import S3Proxy
from tests.e2e.helpers import Project, list_keys

JOBS, PER_JOB = 4, 500
TOTAL = JOBS * PER_JOB


@pytest.fixture()
def proxy(s3_server) -> Iterator[S3Proxy]:  # noqa: ANN001
    with S3Proxy(s3_server.url) as server:
        yield server


def landed(proxy: S3Proxy, since: int = 0) -> int:
    return sum(1 for r in proxy.of("PutObject", since) if r.ok and r.key.startswith("data/"))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_mid_run_leaves_only_whole_objects_and_the_rerun_finishes(
        project: Project, s3, bucket: str, proxy: S3Proxy, tmp_path: Path) -> None:  # noqa: ANN001
    source = tmp_path / "source"
    for j in range(JOBS):
        (source / f"j{j}").mkdir(parents=True)
        for i in range(PER_JOB):
            (source / f"j{j}" / f"j{j}-f{i:04d}.txt").write_text(f"job {j} file {i}\n" * (1 + i % 7))
    project.env.update({"S3_PROXY_URL": proxy.url, "LOG_LEVEL": "INFO"})
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_PROXY_URL}"},
                     "retry": {"attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.05}},
        "services": {"tiny": {"type": "localdir", "source": {"path": str(source / "j0")}}},
    })
    batch = project.write_batch([{"job_id": f"tiny_{j}", "service_id": "tiny",
                                  "params": {"path": str(source / f"j{j}")}} for j in range(JOBS)])

    t0 = time.monotonic()
    with open(project.root / "run1.out", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli_init", "--batch-file", str(batch),
                                 "--report", "report1.json", "--max-workers", "4", "--log-format", "json"],
                                cwd=project.root, env=project.env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while proc.poll() is None and landed(proxy) < TOTAL * 2 // 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    first_run_s = time.monotonic() - t0
    assert code == 130, (project.root / "run1.out").read_text()[-2000:]
    report1 = project.report("report1.json")
    assert report1["exit_code"] == 130 and {j["status"] for j in report1["jobs"]} <= {"cancelled", "succeeded"}

    # every object is whole: its content matches its sha256 metadata; no upload is left open
    present = list_keys(s3, bucket, "data/")
    assert TOTAL // 3 <= len(present) < TOTAL
    for key in present:
        obj = s3.get_object(Bucket=bucket, Key=key)
        assert hashlib.sha256(obj["Body"].read()).hexdigest() == obj["Metadata"]["sha256"], key
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert report1["totals"]["files"]["uploaded"] == len(present), "what the report says landed, landed"

    # the re-run uploads exactly what is missing
    mark = len(proxy.requests)
    t1 = time.monotonic()
    rerun = project.run("--batch-file", str(batch), "--report", "report2.json", "--max-workers", "4", timeout=300)
    rerun_s = time.monotonic() - t1
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    files = project.report("report2.json")["totals"]["files"]
    missing = TOTAL - len(present)
    assert files["uploaded"] + files["skipped_same"] == TOTAL
    assert files["uploaded"] == missing and files["skipped_same"] == len(present)
    assert landed(proxy, mark) == missing, "the re-run PUT only the missing files"
    assert len(list_keys(s3, bucket, "data/")) == TOTAL
    print(f"\n{TOTAL} files: SIGINT after {first_run_s:.1f}s with {len(present)} landed; "
          f"the re-run uploaded {missing} and skipped {len(present)} in {rerun_s:.1f}s")
