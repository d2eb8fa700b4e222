"""The built-in ``local`` source through the CLI: a folder to S3, filters, incremental re-run."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tests.e2e.helpers import Project, list_keys


def seed(root: Path, files: dict[str, bytes], age_s: float = 60) -> None:
    then = time.time() - age_s
    for name, data in files.items():
        path = root.joinpath(*name.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (then, then))


def test_local_to_s3_through_the_cli(project: Project, s3: Any, bucket: str, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    seed(drop, {"a.csv": b"id\n1\n", "sub/b.csv": b"id\n2\n", "skip.tmp": b"x"})
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"drop": {"type": "local", "source": {"path": str(drop), "exclude": ["*.tmp"]},
                              "incremental": True}},
    })
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    result = project.run("--batch-file", str(batch), "--report", "r.json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert list_keys(s3, bucket, "data/") == ["data/local/drop/validated/a.csv", "data/local/drop/validated/sub/b.csv"]
    again = project.run("--batch-file", str(batch), "--report", "r2.json")
    assert again.returncode == 0 and project.report("r2.json")["jobs"][0]["files"]["skipped_unchanged"] == 2
