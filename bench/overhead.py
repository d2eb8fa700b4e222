"""Framework overhead per job: N jobs of a module that finds nothing, in one batch.

The example plugin's ``localdir`` type reads an empty folder, so a job does only what the
framework does around any job: dispatch, bind and open its log, build the runner and
the module, make and remove a workdir, and write the job's manifest to S3 (one PUT:
every job writes one, even an empty one). The CLI runs once with 1 job (the
fixed cost: interpreter, imports, config, logging, uploader) and once with N jobs; both
per-job figures are reported: ``wall(N) / N`` and ``(wall(N) - wall(1)) / N``.
The S3 server's CPU time over the run tells how much of it went to the manifest writes.

The manifests are I/O every job must do, not framework overhead: :func:`run_manifest_probe`
sends the same number of manifest-sized PUTs with plain boto3 from as many threads, and
the framework's overhead per job is the batch's wall time per job (start-up excluded)
minus the probe's wall time per PUT.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from bench.clients import base_env
from bench.measure import Sample, Servers, landed, run_process, to_sample
from bench.servers import REPO

__all__ = ["run_manifest_probe", "run_noop"]


def _project(workdir: Path, jobs: int) -> tuple[Path, Path, Path]:
    """(registry, batch, run directory) of a batch of ``jobs`` localdir jobs on an empty folder."""
    root = workdir / f"noop_{jobs}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "empty").mkdir(parents=True)
    registry = root / "registry.yaml"
    registry.write_text(yaml.safe_dump({
        "version": 1,
        "defaults": {"destination": {"bucket": "${BENCH_BUCKET}", "endpoint_url": "${S3_URL}"}},
        "services": {"noop": {"type": "localdir", "source": {"path": str(root / "empty")}}},
    }, sort_keys=False))
    batch = root / "batch.json"
    batch.write_text(json.dumps({"description": "no-op jobs",
                                 "jobs": [{"job_id": f"noop_{i:05d}", "service_id": "noop"} for i in range(jobs)]}))
    run_dir = root / "run"
    run_dir.mkdir()
    return registry, batch, run_dir


def run_noop(workdir: Path, servers: Servers, jobs: int, workers: int, repeat: int, bucket: str,
             wrap: Sequence[str] = ()) -> Sample:
    """One CLI run of ``jobs`` no-op jobs with ``--max-workers workers``, checked and measured.

    ``wrap`` goes before the command (a profiler).
    """
    registry, batch, run_dir = _project(workdir, jobs)
    s3 = servers.client()
    s3.create_bucket(Bucket=bucket)
    argv = [*wrap, sys.executable, "-m", "orchestrator.cli_init", "--batch-file", str(batch), "--registry", str(registry),
            "--max-workers", str(workers), "--report", "report.json", "--log-format", "json"]
    env = {**base_env(servers), "BENCH_BUCKET": bucket, "LOG_LEVEL": "INFO"}
    result = run_process(argv, cwd=run_dir, env=env, log=run_dir.parent / "run.log", servers=servers)
    report_path = run_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    succeeded = report.get("totals", {}).get("jobs", {}).get("succeeded", 0)
    manifests = sum(1 for _ in _manifest_keys(s3, bucket))
    ok = result.exit_code == 0 and succeeded == jobs and manifests == jobs and not landed(s3, bucket)
    note = f"{succeeded}/{jobs} jobs succeeded, {manifests} manifests written"
    if ok:
        shutil.rmtree(run_dir.parent, ignore_errors=True)
    size = manifest_size(servers, bucket) if ok else 600
    return to_sample(result, "noop", f"noop_{jobs}", repeat, 0, 0, ok, note, jobs=jobs,
                     ms_per_job=round(result.wall_s * 1000 / jobs, 4), manifest_bytes=size)


def run_manifest_probe(servers: Servers, count: int, workers: int, bucket: str, size: int) -> dict[str, float]:
    """:mod:`bench.manifest_probe`: ``count`` manifest-sized PUTs from ``workers`` threads; its JSON line."""
    s3 = servers.client()
    s3.create_bucket(Bucket=bucket)
    argv = [sys.executable, "-m", "bench.manifest_probe", "--endpoint", servers.s3_url, "--bucket", bucket,
            "--count", str(count), "--workers", str(workers), "--size", str(size)]
    done = subprocess.run(argv, cwd=REPO, env=base_env(servers), capture_output=True, text=True, check=True,
                          timeout=3600)
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def manifest_size(servers: Servers, bucket: str) -> int:
    """Bytes of one manifest the last no-op batch wrote (the probe writes objects as large)."""
    s3 = servers.client()
    key = next(iter(_manifest_keys(s3, bucket)), None)
    return int(s3.head_object(Bucket=bucket, Key=key)["ContentLength"]) if key else 600


def _manifest_keys(s3: object, bucket: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="_manifests/")  # type: ignore[attr-defined]
    return [o["Key"] for page in pages for o in page.get("Contents", [])]
