"""Per-host connection limits across the jobs of a run (``limits.max_connections``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from module_system.testing import FtpServer
from tests.e2e.helpers import Project, list_keys

CSV = "id,amount\n1,2.5\n"


@pytest.fixture()
def two_servers(tmp_path: Path) -> Iterator[tuple[FtpServer, FtpServer]]:
    busy_root, other_root = tmp_path / "busy", tmp_path / "other"
    for root, jobs in ((busy_root, 20), (other_root, 3)):
        for j in range(jobs):
            folder = root / f"j{j:02d}"
            folder.mkdir(parents=True)
            for f in range(5):
                (folder / f"f{f}.csv").write_text(CSV)
    with FtpServer(busy_root) as busy, FtpServer(other_root) as other:
        yield busy, other


def test_twenty_jobs_never_exceed_two_sessions(project: Project, s3, bucket: str,  # noqa: ANN001
                                               two_servers: tuple[FtpServer, FtpServer]) -> None:
    busy, other = two_servers
    source = {"host": "127.0.0.1", "user": busy.user, "password": busy.password}
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}",
                                     "prefix": "data/{service_id}/{job_id}/"}},
        "services": {
            "busy": {"type": "ftp", "source": {**source, "port": busy.port}, "limits": {"max_connections": 2}},
            "other": {"type": "ftp", "source": {**source, "port": other.port}},
        },
    })
    jobs = [{"job_id": f"busy_{j:02d}", "service_id": "busy", "params": {"path": f"/j{j:02d}"}} for j in range(20)]
    jobs += [{"job_id": f"other_{j}", "service_id": "other", "params": {"path": f"/j{j:02d}"}} for j in range(3)]
    batch = project.write_batch(jobs)
    result = project.run("--batch-file", str(batch), "--max-workers", "8", "--report", "report.json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert busy.peak_sessions <= 2, f"the busy server saw {busy.peak_sessions} sessions at once"
    assert busy.peak_sessions == 2, "the cap is used, not avoided"
    report = project.report()
    started = {j["job_id"]: j["started_at"] for j in report["jobs"]}
    busy_starts = sorted(v for k, v in started.items() if k.startswith("busy"))
    other_latest = max(v for k, v in started.items() if k.startswith("other"))
    assert other_latest < busy_starts[2], "jobs for another host do not wait behind the capped one"
    assert len(list_keys(s3, bucket, "data/")) == 20 * 5 + 3 * 5
