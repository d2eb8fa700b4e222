"""A batch through the CLI from an FTP server that cuts downloads mid-file.

Twenty CSV files of a few hundred KiB (two of them invalid, their bad row past the first
cut) are served by an :class:`FtpServer` that aborts the data connection of the first two
RETRs of every file after 64 KiB. The witnesses: the server's RETR log (REST offsets),
its fault count, S3 object versions (one PUT per key), the objects' SHA-256 against the
source files, the manifest and the run report.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from module_system.testing import FtpServer
from modules.ftp_module.main import FtpModule
from tests.e2e.helpers import Project, list_keys
from tests.faults.conftest import print_figures, versions_per_key

CUT = 64 * 1024
CUTS_PER_FILE = 2
N_FILES = 20
INVALID = {"part-07.csv", "part-16.csv"}
VALIDATED, REJECTED = "data/ftp/ftp_flaky/validated/", "data/ftp/ftp_flaky/rejected/"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def csv_body(index: int, bad: bool) -> bytes:
    """A valid CSV of 200-400 KiB; when ``bad``, one row far past the first cut is broken."""
    rng = random.Random(index)
    rows = ["id,date,amount,name"]
    count = rng.randint(6_000, 12_000)
    for i in range(count):
        rows.append(f"{i},2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d},"
                    f"{rng.uniform(-1e4, 1e4):.2f},name-{rng.getrandbits(48):012x}")
    if bad:
        rows[count - 100] = f"x{count},2026-13-40,seven,broken"
    return ("\n".join(rows) + "\n").encode()


@pytest.fixture()
def source_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """An FTP root with ``drop/part-NN.csv`` (and a file the include pattern leaves out)."""
    root = tmp_path_factory.mktemp("flaky-ftp")
    (root / "drop").mkdir()
    files = {f"part-{i:02d}.csv": csv_body(i, f"part-{i:02d}.csv" in INVALID) for i in range(N_FILES)}
    for name, body in files.items():
        (root / "drop" / name).write_bytes(body)
    (root / "drop" / "readme.txt").write_text("not included")
    return root, files


@pytest.fixture(params=[True, False], ids=["rest", "no_rest"])
def flaky_ftp(request: pytest.FixtureRequest, source_files: tuple[Path, dict[str, bytes]]) -> Iterator[FtpServer]:
    root, _ = source_files
    with FtpServer(root, drop_after_bytes=CUT, drop_transfers=CUTS_PER_FILE, drop_match="*.csv",
                   rest_supported=request.param) as server:
        yield server


def registry(project: Project, bucket: str, ftp: FtpServer) -> dict[str, Any]:
    project.env.update({"FTP_PORT": str(ftp.port), "FTP_PASSWORD": ftp.password})
    return {
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 6, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 10},
        "services": {
            "ftp_flaky": {
                "type": "ftp",
                "source": {"host": "127.0.0.1", "port": "${FTP_PORT}", "user": ftp.user,
                           "password": "${FTP_PASSWORD}", "path": "/drop", "include": ["*.csv"]},
                "validate": {"csv": {"columns": ["id", "date", "amount", "name"],
                                     "types": {"id": "int", "date": "date", "amount": "float"}}},
            },
        },
    }


def test_cut_downloads_land_whole_and_once(project: Project, s3, versioned_bucket: str,  # noqa: ANN001
                                           flaky_ftp: FtpServer,
                                           source_files: tuple[Path, dict[str, bytes]]) -> None:
    _, files = source_files
    bucket, rest = versioned_bucket, flaky_ftp.rest_supported
    project.write_registry(registry(project, bucket, flaky_ftp))
    batch = project.write_batch([{"job_id": "flaky_1", "service_id": "ftp_flaky"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 1, result.stderr  # two rejected files, nothing failed

    # every file was cut twice, each time after 64 KiB, and each cut cost one retry
    valid = sorted(set(files) - INVALID)
    faults = flaky_ftp.faults_injected
    assert faults == N_FILES * CUTS_PER_FILE
    report = project.report()
    [job] = report["jobs"]
    assert job["status"] == "succeeded" and job["attempts"] == 1 and job["error"] is None
    assert job["files"]["uploaded"] == len(valid) and job["files"]["rejected"] == len(INVALID)
    assert job["files"]["failed"] == 0
    assert report["totals"]["retries"] >= faults > 0

    # resume, not restart (or restart when the server refuses REST)
    for name in files:
        offsets = flaky_ftp.retrs_of(f"drop/{name}")
        assert offsets == ([0, CUT, 2 * CUT] if rest else [0, 0, 0]), (name, offsets)
    assert "REST" in flaky_ftp.commands  # tried once even when refused
    if not rest:
        # Remembered for the job: only the lanes already cut when the first refusal came try it
        # (at most one per transfer in flight), not each of the N_FILES x CUTS_PER_FILE cuts.
        assert 1 <= flaky_ftp.commands.count("REST") <= FtpModule.default_transfers, "a refused REST is remembered"

    # byte-identical: object == source == metadata sha256, valid and rejected alike
    keys = list_keys(s3, bucket, "data/")
    assert keys == sorted([VALIDATED + n for n in valid] + [REJECTED + n for n in INVALID]
                          + [REJECTED + n + ".errors.json" for n in INVALID])
    intact = set()
    for key in keys:
        if key.endswith(".errors.json"):
            continue
        obj = s3.get_object(Bucket=bucket, Key=key)
        name = key.rsplit("/", 1)[1]
        assert sha(obj["Body"].read()) == sha(files[name]) == obj["Metadata"]["sha256"], key
        intact.add(name)
    assert intact == set(files)
    survived = sum(len(flaky_ftp.retrs_of(f"drop/{n}")) - 1 for n in intact)  # one extra RETR per cut
    for name in INVALID:
        errors = json.loads(s3.get_object(Bucket=bucket, Key=REJECTED + name + ".errors.json")["Body"].read())
        assert errors["errors"] and all("row" in e["location"] for e in errors["errors"]), errors

    # nothing twice: one manifest entry and one S3 version per key
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="_manifests/ftp_flaky/flaky_1.json")["Body"].read())
    entries = [f["key"] for f in manifest["files"]]
    assert len(entries) == len(set(entries)) == N_FILES
    versions = versions_per_key(s3, bucket, "data/")
    assert set(versions) == set(keys) and set(versions.values()) == {1}

    # the job log tells the story: a resume per cut (or a restart per cut)
    log = (project.root / "temp" / "logs" / "flaky_1_ftp_flaky_ftp.log").read_text()
    records = [json.loads(line) for line in log.splitlines()]
    events = [r["event"] for r in records]
    assert events.count("ftp_download_resumed" if rest else "ftp_download_restarted") == faults
    discarded = sum(r.get("discarded", 0) for r in records if r["event"] == "ftp_download_restarted")
    assert discarded == (0 if rest else faults * CUT)

    # a re-run uploads nothing: every valid file is skipped_same, still one version per key
    rerun = project.run("--batch-file", str(batch), "--report", "report2.json")
    assert rerun.returncode == 1, rerun.stderr
    [again] = project.report("report2.json")["jobs"]
    assert again["files"]["uploaded"] == 0 and again["files"]["skipped_same"] == len(valid)
    assert again["files"]["rejected"] == len(INVALID) and again["files"]["failed"] == 0
    assert set(versions_per_key(s3, bucket, VALIDATED).values()) == {1}

    print_figures(f"ftp ({'REST resume' if rest else 'no REST: restart'})", files=N_FILES,
                  faults_injected=faults, faults_survived=survived, retries=report["totals"]["retries"],
                  bytes_fetched_again=discarded, files_lost=N_FILES - len(intact),
                  duplicates=sum(v - 1 for v in versions.values()))
    assert survived == faults
