"""The no-op batch's reference: plain boto3 writing as many manifest-sized objects.

    python -m bench.manifest_probe --endpoint URL --bucket NAME --count 10000 --workers 20 --size 600

Every job writes its manifest (INTERFACE §5), so a batch of N no-op jobs sends N PUTs to
the S3 server, whatever the framework around them costs. This probe sends the same N
PUTs (same size, ``ChecksumSHA256`` and ``sha256`` metadata, like ours) from ``--workers``
threads sharing one client, and prints one JSON line: the wall and CPU seconds of that
loop alone (imports and client set-up excluded). ``bench/run.py`` subtracts its wall time
per object from the no-op batch's wall time per job (start-up excluded as well): what is
left is the framework's own overhead per job.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

from bench.raw_probe import probe_client


def put_all(endpoint: str, bucket: str, count: int, workers: int, size: int) -> dict[str, float]:
    client = probe_client(endpoint, workers)
    body = json.dumps({"files": [], "pad": "x" * max(0, size - 24)}).encode()
    sha256 = hashlib.sha256(body)
    args = {"Bucket": bucket, "Body": body, "ContentType": "application/json",
            "Metadata": {"sha256": sha256.hexdigest()}, "ChecksumSHA256": base64.b64encode(sha256.digest()).decode()}

    def put(index: int) -> None:
        client.put_object(Key=f"_manifests/probe/noop_{index:05d}.json", **args)

    cpu, wall = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, range(count)))
    return {"objects": count, "seconds": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
            "bytes_each": len(body)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--size", type=int, default=600)
    args = parser.parse_args()
    print(json.dumps(put_all(args.endpoint, args.bucket, args.count, args.workers, args.size)))


if __name__ == "__main__":
    main()
