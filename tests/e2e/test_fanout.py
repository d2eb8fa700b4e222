"""Fan-out: ``destination`` as a list (issue 12, item 4), through the CLI against real servers.

A file counts as landed when every destination holds it; the manifest says what each
destination did; a re-run completes only what one of them missed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Project, list_keys
from tests.servers.s3_proxy import ProxyRequest, S3Proxy

SERVICE = "drop"
FILES = {"a.csv": "id\n1\n", "sub/b.csv": "id\n2\n", "c.csv": "id\n3\n"}


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "drop"
    for name, text in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture()
def backup(s3: Any, bucket: str) -> str:
    name = f"{bucket}-backup"
    s3.create_bucket(Bucket=name)
    return name


def write(project: Project, folder: Path, destination: Any) -> Path:
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": "unused-default", "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.02}, "timeout_s": 5},
        "services": {SERVICE: {"type": "localdir", "source": {"path": str(folder)}, "incremental": True,
                               "validate": {"csv": {"columns": ["id"], "types": {"id": "int"}}},
                               "destination": destination}},
    })
    return project.write_batch([{"job_id": "job_1", "service_id": SERVICE}])


def manifest(s3: Any, bucket: str) -> dict[str, Any]:
    body = s3.get_object(Bucket=bucket, Key=f"_manifests/{SERVICE}/job_1.json")["Body"].read()
    return json.loads(body)  # type: ignore[no-any-return]


def data_keys(s3: Any, bucket: str) -> list[str]:
    return [k for k in list_keys(s3, bucket) if not k.startswith(("_manifests/", "_state/"))]


def test_every_destination_holds_every_file_and_the_manifest_says_so(project: Project, s3: Any, bucket: str,
                                                                      backup: str, folder: Path) -> None:
    batch = write(project, folder, [{"bucket": bucket}, {"name": "backup", "bucket": backup, "prefix": "copy/"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 0, result.stderr[-2000:]

    prefix = f"data/localdir/{SERVICE}/validated/"
    assert data_keys(s3, bucket) == sorted(prefix + n for n in FILES)
    assert data_keys(s3, backup) == sorted("copy/" + n for n in FILES)
    for where in (bucket, backup):  # each file destination has the manifest
        files = {Path(f["source_uri"]).name: f for f in manifest(s3, where)["files"]}
        assert files["a.csv"]["status"] == "uploaded" and files["a.csv"]["key"] == prefix + "a.csv"
        assert files["a.csv"]["destinations"] == {"s3": {"status": "uploaded", "key": prefix + "a.csv"},
                                                  "backup": {"status": "uploaded", "key": "copy/a.csv"}}
    assert project.report()["jobs"][0]["files"]["uploaded"] == 3


def test_a_destination_that_failed_is_completed_by_the_re_run(project: Project, s3: Any, s3_server: Any,
                                                               bucket: str, backup: str, folder: Path) -> None:
    def refuse_backup_files(request: ProxyRequest) -> str | None:
        is_file = request.operation == "PutObject" and request.path.startswith(f"/{backup}/copy/")
        return "503" if is_file else None

    with S3Proxy(s3_server.url, fault=refuse_backup_files) as proxy:
        batch = write(project, folder, [{"bucket": bucket},
                                        {"name": "backup", "bucket": backup, "prefix": "copy/",
                                         "endpoint_url": proxy.url}])
        first = project.run("--batch-file", str(batch), "--report", "report.json")
        assert first.returncode == 1, first.stderr[-2000:]
        job = project.report()["jobs"][0]
        assert job["status"] == "failed" and job["files"]["failed"] == 3
        assert data_keys(s3, bucket) == sorted(f"data/localdir/{SERVICE}/validated/{n}" for n in FILES)
        assert data_keys(s3, backup) == [], "the backup refused every file"
        entry = next(f for f in manifest(s3, bucket)["files"] if f["source_uri"].endswith("/a.csv"))
        assert entry["status"] == "failed" and entry["key"] is None
        assert entry["destinations"]["s3"]["status"] == "uploaded"
        assert entry["destinations"]["backup"]["status"] == "failed"
        assert entry["errors"][0]["message"].startswith("backup: ")

        proxy.fault = None
        put_before = len(proxy.of("PutObject"))
        second = project.run("--batch-file", str(batch), "--report", "report.json")
        assert second.returncode == 0, second.stderr[-2000:]
        assert data_keys(s3, backup) == sorted("copy/" + n for n in FILES)
        entry = next(f for f in manifest(s3, bucket)["files"] if f["source_uri"].endswith("/a.csv"))
        assert entry["status"] == "uploaded"
        assert entry["destinations"] == {
            "s3": {"status": "skipped_same", "key": f"data/localdir/{SERVICE}/validated/a.csv"},
            "backup": {"status": "uploaded", "key": "copy/a.csv"}}
        puts = [r.key for r in proxy.of("PutObject", since=0)[put_before:]]
        assert sorted(k for k in puts if k.startswith("copy/")) == sorted("copy/" + n for n in FILES)


@pytest.mark.parametrize(("destination", "key", "message"), [
    ([], "destination", "an empty list"),
    ([{"bucket": "x-bucket"}, {"bucket": "y-bucket"}], "destination[1].name", "two destinations are named 's3'"),
    ([{"bucket": "x-bucket"}, {"name": "b", "bukket": "y"}], "destination[1]", "bukket"),
    ([{"bucket": "x-bucket"}, {"type": "nosuch"}], "destination[1].type", "unknown destination type 'nosuch'"),
    ({"bucket": "x-bucket", "name": "bad name"}, "destination.name", ""),
    ("x-bucket", "destination", "object"),
])
def test_destination_mistakes_exit_2_naming_the_key(project: Project, folder: Path, destination: Any, key: str,
                                                    message: str) -> None:
    batch = write(project, folder, destination)
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 2, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert f"service '{SERVICE}'" in line and f"key '{key}" in line and message in line, line


# ---------------------------------------------------------------------- a destination plugin


def test_a_destination_plugin_is_listed_checked_and_lands_files(project: Project, scripted: None, s3: Any,
                                                                bucket: str, folder: Path, tmp_path: Path) -> None:
    """``jsonl_log`` (tests/e2e/plugins/jsonl_destination.py) is a third-party FileDestination
    installed as a real entry point: listed by ``modules``, its keys checked, files landed in it."""
    listed = project.cli("modules")
    line = next(x for x in listed.stdout.splitlines() if x.split()[:2] == ["destination", "jsonl_log"])
    assert "scripted_source 1.0" in line and "jsonl_destination:JsonlLogDestination" in line, line

    wrong = write(project, folder, [{"bucket": bucket}, {"type": "jsonl_log", "dri": str(tmp_path / "x")}])
    result = project.run("--batch-file", str(wrong))
    assert result.returncode == 2
    unknown, missing = result.stderr.strip().splitlines()  # every mistake of the entry, one line each
    assert "key 'destination[1].dir': required key is missing" in missing, missing
    assert "key 'destination[1].dri': unknown key" in unknown, unknown

    out = tmp_path / "plugin-out"
    batch = write(project, folder, [{"bucket": bucket}, {"type": "jsonl_log", "dir": str(out)}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 0, result.stderr[-2000:]
    logged = [json.loads(x) for x in (out / "landed.jsonl").read_text().splitlines()]
    keys = sorted(x["key"] for x in logged if not x["key"].startswith("_manifests/"))
    assert keys == sorted(f"data/localdir/{SERVICE}/validated/{n}" for n in FILES)
    assert (out / "files" / "_manifests" / SERVICE / "job_1.json").exists(), "its manifest too"
    entry = manifest(s3, bucket)["files"][0]
    assert set(entry["destinations"]) == {"s3", "jsonl_log"}
