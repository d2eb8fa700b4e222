"""A batch through the CLI into an S3 endpoint that throttles and drops connections.

The destination's ``endpoint_url`` is an :class:`S3Proxy` in front of moto that faults
about one request in four (seeded), cycling: ``503 SlowDown``; a reset before the request reaches S3;
a reset after S3 acted on it (the answer is lost). Fifty local files (``type:
localdir``), two of them invalid CSVs and two large enough for multipart uploads, must
land byte-identical and once each. The witnesses: the proxy's log and fault counts, S3
object versions (one per write), the objects' SHA-256 against the sources, the report.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from destinations.s3 import PROBE_KEY
from tests.e2e.helpers import Project, list_keys
from tests.faults.conftest import print_figures, versions_per_key
from tests.servers.s3_proxy import ProxyRequest, S3Proxy, fraction

N_SMALL = 46
INVALID = {"bad-1.csv", "bad-2.csv"}
LARGE = {"large-1.csv", "large-2.csv"}  # > multipart_threshold_mb (5): three 5 MiB parts each
VALIDATED, REJECTED = "data/localdir/s3_flaky/validated/", "data/localdir/s3_flaky/rejected/"
WRITES = ("PutObject", "CompleteMultipartUpload")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def csv_body(seed: int, rows: int, bad: bool = False) -> bytes:
    rng = random.Random(seed)
    lines = ["id,date,amount,name"]
    lines += [f"{i},2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},{rng.uniform(-1e4, 1e4):.2f},"
              f"n{rng.getrandbits(64):016x}" for i in range(rows)]
    if bad:
        lines[rows // 2] = "x,2026-13-40,seven,broken"
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A folder of 50 CSV files: 46 small, 2 large, 2 invalid."""
    root = tmp_path_factory.mktemp("s3-flaky-src")
    files = {f"small-{i:02d}.csv": csv_body(i, random.Random(i).randint(20, 800)) for i in range(N_SMALL)}
    files.update({name: csv_body(100 + i, 240_000) for i, name in enumerate(sorted(LARGE))})
    files.update({name: csv_body(200 + i, 300, bad=True) for i, name in enumerate(sorted(INVALID))})
    for name, body in files.items():
        (root / name).write_bytes(body)
    return root, files


def flaky() -> Any:
    """A quarter of the requests faulted (seeded), cycling 503 / reset / reset-after, and the first
    PutObject, UploadPart and CompleteMultipartUpload whatever the draw (parallel transfers change
    the order requests arrive in, so the draw alone may miss one). A lost CreateMultipartUpload
    answer would orphan an upload (swept only after a day), so that one gets a 503 instead."""
    rule = fraction(0.25, ("503", "reset", "reset_after"), seed=1)
    unfaulted = {"PutObject": "reset_after", "UploadPart": "reset", "CompleteMultipartUpload": "reset_after"}
    lock = threading.Lock()

    def fault(request: ProxyRequest) -> str | None:
        kind = rule(request)
        with lock:
            first = unfaulted.pop(request.operation, None)
        kind = kind or first
        return "503" if kind == "reset_after" and request.operation == "CreateMultipartUpload" else kind

    return fault


@pytest.fixture()
def proxy(s3_server) -> Iterator[S3Proxy]:
    with S3Proxy(s3_server.url, fault=flaky()) as server:
        yield server


def registry(project: Project, bucket: str, proxy: S3Proxy, folder: Path) -> dict[str, Any]:
    """A quarter of requests fail and parallel transfers shuffle which: with 10 attempts, the chance
    that one request draws a fault every time is 0.25**10 (6 attempts failed about one run in 50)."""
    project.env["S3_PROXY_URL"] = proxy.url
    return {
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_PROXY_URL}",
                                     "multipart_threshold_mb": 5, "multipart_chunksize_mb": 5,
                                     "max_concurrency": 4},
                     "retry": {"attempts": 10, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 10},
        "services": {"s3_flaky": {
            "type": "localdir",
            "source": {"path": str(folder)},
            "validate": {"csv": {"columns": ["id", "date", "amount", "name"],
                                 "types": {"id": "int", "date": "date", "amount": "float"}}},
        }},
    }


def is_write_check(request: ProxyRequest) -> bool:
    """A request of the check of the destination made before any job starts (orchestrator/preflight.py)."""
    return request.operation == "HeadBucket" or request.key == PROBE_KEY


def writes_that_landed(proxy: S3Proxy, prefix: str) -> Counter[str]:
    """Per key under ``prefix``, the PUTs and multipart completions S3 carried out (answer lost or not)."""
    return Counter(r.key for r in proxy.requests if r.operation in WRITES and r.key.startswith(prefix)
                   and r.status is not None and 200 <= r.status < 300)


def test_throttled_and_reset_s3_gets_every_file_once(project: Project, s3, versioned_bucket: str,
                                                     proxy: S3Proxy, source: tuple[Path, dict[str, bytes]]) -> None:
    folder, files = source
    bucket = versioned_bucket
    project.write_registry(registry(project, bucket, proxy, folder))
    batch = project.write_batch([{"job_id": "flaky_s3", "service_id": "s3_flaky"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json", timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]  # two rejected files, nothing failed

    # the faults hit, and each cost exactly one retry (the run's own; not the destination check's before it)
    injected = sum(1 for r in proxy.requests if r.fault and not is_write_check(r))
    assert set(proxy.injected) == {"503", "reset", "reset_after"} and injected >= 20
    assert {r.operation for r in proxy.requests if r.fault} >= {"PutObject", "UploadPart", "CompleteMultipartUpload"}
    report = project.report()
    [job] = report["jobs"]
    assert job["status"] == "succeeded" and job["error"] is None, job
    valid = sorted(set(files) - INVALID)
    assert job["files"] == {**job["files"], "uploaded": len(valid), "rejected": len(INVALID), "failed": 0}
    assert report["totals"]["retries"] == injected

    # byte-identical: object == source == sha256 metadata
    keys = list_keys(s3, bucket, "data/")
    assert keys == sorted([VALIDATED + n for n in valid] + [REJECTED + n for n in INVALID]
                          + [REJECTED + n + ".errors.json" for n in INVALID])
    for key in keys:
        if not key.endswith(".errors.json"):
            obj = s3.get_object(Bucket=bucket, Key=key)
            assert sha(obj["Body"].read()) == sha(files[key.rsplit("/", 1)[1]]) == obj["Metadata"]["sha256"], key
    assert all("-3" in s3.head_object(Bucket=bucket, Key=VALIDATED + n)["ETag"] for n in LARGE), "multipart"

    # none twice: one S3 version per key, one success seen per key, no upload left open
    versions = versions_per_key(s3, bucket, "data/")
    assert set(versions) == set(keys) and set(versions.values()) == {1}
    assert writes_that_landed(proxy, "data/") == Counter({k: 1 for k in keys})
    lost = [r for r in proxy.requests if r.fault == "reset_after" and r.operation in WRITES]
    assert lost, "some writes landed with their answer lost, and were not written again"
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert list((project.root / "temp" / "uploads").iterdir()) == []

    # a re-run, faults still on, writes nothing
    mark, first = len(proxy.requests), Counter(proxy.injected)
    again = project.run("--batch-file", str(batch), "--report", "report2.json", timeout=300)
    assert again.returncode == 1, again.stderr[-2000:]
    report2 = project.report("report2.json")
    assert report2["totals"]["retries"] == sum(1 for r in proxy.requests[mark:] if r.fault and not is_write_check(r))
    files2 = report2["jobs"][0]["files"]
    assert files2["uploaded"] == 0 and files2["skipped_same"] == len(valid) and files2["rejected"] == len(INVALID)
    data_writes = [r for r in proxy.requests[mark:] if r.key.startswith("data/")
                   and r.operation in (*WRITES, "UploadPart", "CreateMultipartUpload")]
    assert data_writes == []
    assert set(versions_per_key(s3, bucket, "data/").values()) == {1}
    print_figures("s3_faults", files=len(files), requests=mark, injected=injected,
                  **{f"injected_{k}": v for k, v in sorted(first.items())}, retries=report["totals"]["retries"],
                  lost_answers_not_rewritten=len(lost), rerun_requests=len(proxy.requests) - mark,
                  rerun_injected=report2["totals"]["retries"])
