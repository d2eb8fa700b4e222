"""The raw-capacity probe: boto3 puts local files straight into the S3 server.

    python -m bench.raw_probe --endpoint URL --bucket NAME --root DIR [--workers 8]

No FTP, no validation, no hashing of our own, no HEAD before or after: one s3transfer
``TransferManager`` whose request pool is ``--workers`` threads wide uploads every file
under ``--root`` to its relative path, with the same multipart threshold and part size
as module_system's defaults (64 MiB, 8 MiB). Botocore's own checksums are off
(``when_required``). What this process achieves is what the S3 server and this machine
allow one Python client; module_system is compared against it run by run.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from s3transfer.manager import TransferConfig, TransferManager

MiB = 1 << 20


def probe_client(endpoint: str, workers: int, **config: object) -> Any:
    """A plain boto3 S3 client for ``workers`` threads, botocore's defaults but ``config``."""
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(max_pool_connections=workers + 4, retries={"total_max_attempts": 3}, **config),
    )


def upload_all(endpoint: str, bucket: str, root: Path, workers: int, threshold_mb: int, chunk_mb: int) -> int:
    """Upload every file under ``root``; returns how many."""
    client = probe_client(endpoint, workers, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required")
    config = TransferConfig(multipart_threshold=threshold_mb * MiB, multipart_chunksize=chunk_mb * MiB,
                            max_request_concurrency=workers, max_submission_concurrency=workers,
                            max_in_memory_upload_chunks=workers)
    files = sorted(p for p in root.rglob("*") if p.is_file())
    with TransferManager(client, config) as manager:
        futures = [manager.upload(str(path), bucket, path.relative_to(root).as_posix()) for path in files]
        for future in futures:
            future.result()
    return len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--root", required=True, type=Path)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--threshold-mb", type=int, default=64)
    parser.add_argument("--chunk-mb", type=int, default=8)
    args = parser.parse_args()
    count = upload_all(args.endpoint, args.bucket, args.root, args.workers, args.threshold_mb, args.chunk_mb)
    print(f"raw probe: {count} files uploaded")


if __name__ == "__main__":
    main()
