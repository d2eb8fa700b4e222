"""A large file moves from FTP to S3 with flat memory: streamed to disk while hashed,
uploaded in parts, never held whole."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import Project, write_big_file

SIZE_MB = int(os.environ.get("MODULE_SYSTEM_LARGE_FILE_MB", "1024"))
PEAK_RSS_LIMIT_MB = 300


@pytest.mark.slow
def test_large_ftp_file_lands_with_flat_memory(project: Project, s3, bucket: str, ftp_server,  # noqa: ANN001
                                              ftp_dir: Path, ftp_root: Path) -> None:
    expected = write_big_file(ftp_dir / "big.bin", SIZE_MB)
    project.write_ftp_registry(bucket, ftp_server, "/" + ftp_dir.relative_to(ftp_root).as_posix(), "big")
    batch = project.write_batch([{"job_id": "big_1", "service_id": "big"}])
    rss_file = project.root / "peak_rss_kib"
    script = Path(__file__).with_name("peak_rss.py")
    env = {**project.env, "LOG_LEVEL": "INFO"}
    result = subprocess.run([sys.executable, str(script), str(rss_file), "--batch-file", str(batch)],
                            cwd=project.root, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    peak_mb = int(rss_file.read_text()) / 1024
    head = s3.head_object(Bucket=bucket, Key="data/ftp/big/validated/big.bin")
    assert head["ContentLength"] == SIZE_MB << 20
    assert head["Metadata"]["sha256"] == expected
    assert peak_mb < PEAK_RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB for a {SIZE_MB} MB file"
    print(f"\n{SIZE_MB} MB file: peak RSS of the CLI process {peak_mb:.0f} MB")
