"""The state directory (``--state-dir``, ``$MODULE_SYSTEM_STATE_DIR``): runs that share it, and runs that find it.

* Two runs started at once in one directory, on one batch into one bucket, both
  succeed: each works in its own ``<state>/work/<run_id>/``, and the multipart upload
  both want is made once, under the key's lock (issue 10, item 3).
* A run from another directory, pointed at the state dir by the option or the
  environment, resumes the upload a killed run left (item 3).
* The stale-upload sweep aborts only uploads our state files know, even when the
  destination prefix starts with a placeholder (item 8).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from common.file_lock import FileLock
from common.multipart_state import StateStore, UploadState
from tests.servers.s3_proxy import ProxyRequest, S3Proxy
from tests.e2e.helpers import Project, list_keys, write_big_file

MiB = 1 << 20


def localdir_registry(project: Project, bucket: str, endpoint: str, folder: Path, **destination: Any) -> Path:
    project.env["S3_ENDPOINT"] = endpoint
    return project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_ENDPOINT}",
                                     "multipart_threshold_mb": 5, "multipart_chunksize_mb": 5, **destination},
                     "retry": {"attempts": 3, "backoff_s": 0.05, "max_backoff_s": 0.2}},
        "services": {"files": {"type": "localdir", "source": {"path": str(folder)}}},
    })


def start(project: Project, cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli_init", "--log-format", "json", *args],
                            cwd=cwd, env=env or project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------- two runs at once


def test_two_runs_at_once_in_one_directory_both_succeed(project: Project, s3, s3_server, bucket: str,  # noqa: ANN001
                                                        tmp_path: Path) -> None:
    folder = tmp_path / "source"
    folder.mkdir()
    expected = {"a_big.bin": write_big_file(folder / "a_big.bin", 24)}
    for n in range(120):
        data = f"row,{n}\n".encode() * 50
        (folder / f"small_{n:03}.csv").write_bytes(data)
        expected[f"small_{n:03}.csv"] = sha256(data)
    registry = localdir_registry(project, bucket, s3_server.url, folder)
    batch = project.write_batch([{"job_id": "files_1", "service_id": "files"}])
    args = ("--batch-file", str(batch), "--registry", str(registry))

    runs = [start(project, project.root, *args, "--report", f"report{i}.json") for i in (1, 2)]
    with ThreadPoolExecutor(2) as pool:  # both pipes drained at once: a run blocked on a full pipe holds its locks
        outputs = list(pool.map(lambda run: run.communicate(timeout=300), runs))
    for run, (_, err) in zip(runs, outputs):
        assert run.returncode == 0, err[-3000:]

    prefix = "data/localdir/files/validated/"
    assert list_keys(s3, bucket, prefix) == sorted(prefix + name for name in expected)
    for name, digest in expected.items():
        body = s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()
        assert sha256(body) == digest, name
    reports = [project.report(f"report{i}.json") for i in (1, 2)]
    assert reports[0]["run_id"] != reports[1]["run_id"]
    for report in reports:
        files = report["jobs"][0]["files"]
        assert files["uploaded"] + files["skipped_same"] == len(expected) and files["failed"] == 0
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    state = project.root / "temp"
    assert list((state / "work").iterdir()) == [], "each run removed its own work dir and lock"
    assert list((state / "uploads").iterdir()) == [], "no state or lock file left"
    events = [e for _, err in outputs for e in ("multipart_created", "multipart_waiting_for_other_run",
                                                "multipart_landed_by_other_run", "file_skipped_same") if f'"{e}"' in err]
    big = [r["jobs"][0]["files"] for r in reports]
    print(f"\ntwo runs at once: {len(expected)} files each, both exit 0; per run uploaded/skipped_same "
          f"{[(f['uploaded'], f['skipped_same']) for f in big]}; events seen: {sorted(set(events))}")


def test_a_run_waits_for_an_upload_another_run_holds_and_sends_nothing_it_landed(
        project: Project, s3, bucket: str, proxy: S3Proxy, tmp_path: Path) -> None:  # noqa: ANN001
    folder = tmp_path / "source"
    folder.mkdir()
    digest = write_big_file(folder / "big.bin", 10)
    key = "data/localdir/files/validated/big.bin"
    registry = localdir_registry(project, bucket, proxy.url, folder)
    batch = project.write_batch([{"job_id": "files_1", "service_id": "files"}])
    state = project.root / "temp"
    other_run = FileLock(StateStore(state / "uploads").key_lock(bucket, key).path)  # as another run holds it
    assert other_run.try_acquire()
    run = start(project, project.root, "--batch-file", str(batch), "--registry", str(registry),
                "--report", "report.json")
    job_log = state / "logs" / "files_1_files_localdir.log"
    deadline = time.monotonic() + 60
    while run.poll() is None and time.monotonic() < deadline and not (
            job_log.exists() and "multipart_waiting_for_other_run" in job_log.read_text()):
        time.sleep(0.02)
    assert run.poll() is None, run.communicate()[1][-2000:]
    # the other run lands the file, then lets go
    s3.put_object(Bucket=bucket, Key=key, Body=(folder / "big.bin").read_bytes(), Metadata={"sha256": digest})
    other_run.release(unlink=True)
    _, err = run.communicate(timeout=60)
    assert run.returncode == 0, err[-2000:]
    assert project.report()["jobs"][0]["files"]["skipped_same"] == 1
    assert not [r for r in proxy.requests if r.key == key and r.operation in (
        "CreateMultipartUpload", "UploadPart", "PutObject")], "nothing sent for a file the other run landed"
    assert list((state / "uploads").iterdir()) == []


def test_a_run_cleans_up_the_work_dir_of_a_killed_run(project: Project, s3_server, bucket: str,  # noqa: ANN001
                                                      tmp_path: Path) -> None:
    folder = tmp_path / "source"
    folder.mkdir()
    (folder / "one.csv").write_text("a\n1\n")
    registry = localdir_registry(project, bucket, s3_server.url, folder)
    batch = project.write_batch([{"job_id": "files_1", "service_id": "files"}])
    work = project.root / "state" / "work"
    (work / "20250101T000000Z-dead00" / "files_1-x").mkdir(parents=True)  # a killed run's: its lock is free
    (work / "20250101T000000Z-dead00" / "files_1-x" / "part.csv").write_text("a\n")
    (work / "20250101T000000Z-dead00.lock").touch()
    (work / "files_1-oldlayout").mkdir()  # the layout before run ids: no lock at all
    result = project.run("--batch-file", str(batch), "--registry", str(registry), "--state-dir", "state")
    assert result.returncode == 0, result.stderr[-2000:]
    assert list(work.iterdir()) == []


# ---------------------------------------------------------------------------- resume from elsewhere


class HoldParts:
    """A proxy rule: parts 1 to ``n`` go through, later ones wait until released, then are reset."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.release, self.holding = threading.Event(), threading.Event()

    def __call__(self, request: ProxyRequest) -> str | None:
        if request.operation != "UploadPart" or (request.part_number or 0) <= self.n:
            return None
        self.holding.set()
        self.release.wait(60)
        return "reset"


@pytest.fixture()
def proxy(s3_server) -> Iterator[S3Proxy]:  # noqa: ANN001
    with S3Proxy(s3_server.url) as server:
        yield server


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_run_from_another_directory_resumes_a_killed_upload(project: Project, s3, bucket: str,  # noqa: ANN001
                                                              proxy: S3Proxy, tmp_path: Path) -> None:
    folder = tmp_path / "source"
    folder.mkdir()
    digest = write_big_file(folder / "big.bin", 40)  # 8 parts of 5 MiB
    key = "data/localdir/files/validated/big.bin"
    registry = localdir_registry(project, bucket, proxy.url, folder)
    batch = project.write_batch([{"job_id": "files_1", "service_id": "files"}])
    state = tmp_path / "cron-state"
    args = ("--batch-file", str(batch), "--registry", str(registry))

    # run 1, from directory a/, finds its state dir in the environment; killed with 3 parts done
    hold = proxy.fault = HoldParts(3)
    first = start(project, tmp_path / "a", *args, env={**project.env, "MODULE_SYSTEM_STATE_DIR": str(state)})
    deadline = time.monotonic() + 120
    done: set[int] = set()
    while len(done) < 3 and first.poll() is None and time.monotonic() < deadline:
        hold.holding.wait(0.05)
        for path in (state / "uploads").glob("*.json"):
            try:
                done = {int(n) for n in json.loads(path.read_text())["parts"]}
            except (OSError, ValueError):  # being replaced
                pass
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    hold.release.set()
    proxy.fault = None
    assert done == {1, 2, 3}, "the killed run recorded its finished parts in the state dir it was given"
    [state_file] = (state / "uploads").glob("*.json")
    upload_id = json.loads(state_file.read_text())["upload_id"]

    # run 2, from directory b/, given the same state dir by the option: resumes, sends parts 4-8 only
    mark = len(proxy.requests)
    rerun = Project(tmp_path / "b", project.env)
    (tmp_path / "b").mkdir()
    result = rerun.run(*args, "--state-dir", str(state), "--report", "report.json")
    assert result.returncode == 0, result.stderr[-3000:]
    at_key = [r for r in proxy.requests[mark:] if r.key == key]
    assert not [r for r in at_key if r.operation == "CreateMultipartUpload"], "resumed, not restarted"
    assert sorted({r.part_number for r in at_key if r.operation == "UploadPart"}) == [4, 5, 6, 7, 8]
    assert [r.params["uploadId"] for r in at_key if r.operation == "CompleteMultipartUpload"] == [upload_id]
    obj = s3.get_object(Bucket=bucket, Key=key)
    assert obj["Metadata"]["sha256"] == digest
    assert hashlib.sha256(obj["Body"].read()).hexdigest() == digest
    assert list((state / "uploads").iterdir()) == []
    assert (state / "logs" / "files_1_files_localdir.log").is_file(), "logs follow the state dir"
    assert not (tmp_path / "a" / "temp").exists() and not (tmp_path / "b" / "temp").exists()


# ---------------------------------------------------------------------------- the sweep


def test_the_sweep_aborts_only_uploads_of_our_own_state_files(project: Project, s3, s3_server,  # noqa: ANN001
                                                              bucket: str, tmp_path: Path) -> None:
    folder = tmp_path / "source"
    folder.mkdir()
    (folder / "one.csv").write_text("a\n1\n")
    registry = localdir_registry(project, bucket, s3_server.url, folder,
                                 prefix="{service_id}/in/", rejected_prefix="{service_id}/rejected/")
    batch = project.write_batch([{"job_id": "files_1", "service_id": "files"}])
    # moto dates every upload 2010-11-10: each looks abandoned for years
    other_tool = s3.create_multipart_upload(Bucket=bucket, Key="files/in/other-tool.bin")["UploadId"]
    elsewhere = s3.create_multipart_upload(Bucket=bucket, Key="elsewhere/upload.bin")["UploadId"]
    ours = s3.create_multipart_upload(Bucket=bucket, Key="files/in/ours.bin")["UploadId"]
    uploads = project.root / "temp" / "uploads"
    uploads.mkdir(parents=True)
    state = UploadState(bucket, "files/in/ours.bin", "ab" * 32, 20 * MiB, 5 * MiB, ours,
                        created_at=time.time() - 2 * 86400)
    (uploads / StateStore.name(state.bucket, state.key, state.sha256, state.size, state.part_size)).write_text(
        state.to_json())

    result = project.run("--batch-file", str(batch), "--registry", str(registry))
    assert result.returncode == 0, result.stderr[-2000:]
    left = {u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])}
    assert left == {other_tool, elsewhere}, "another tool's uploads survive; our stale one is aborted"
    assert list(uploads.iterdir()) == []
    assert list_keys(s3, bucket) == ["_manifests/files/files_1.json", "files/in/one.csv"]
    for upload_id, key in ((other_tool, "files/in/other-tool.bin"), (elsewhere, "elsewhere/upload.bin")):
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
