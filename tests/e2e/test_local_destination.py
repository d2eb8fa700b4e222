"""The ``local`` destination through the CLI (issue 12: "``local`` with the same guarantees as ``s3``").

Same layout as in S3 (prefixes become folders), rejected files beside their errors, manifests
under ``_manifests/``, skip-same on a re-run without rewriting anything, stale copies removed,
incremental runs reading the last manifest from the folder, and nothing written outside ``path``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.e2e.helpers import Project

SERVICE = "drop"
GOOD = "id,amount\n1,2.5\n2,3.0\n"
BAD = "id,amount\n1,not-a-number\n"


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "source"
    (root / "sub").mkdir(parents=True)
    (root / "good.csv").write_text(GOOD)
    (root / "sub" / "also good.csv").write_text(GOOD.replace("2.5", "7"))
    (root / "bad.csv").write_text(BAD)
    return root


def write(project: Project, folder: Path, landing: str, **service: Any) -> Path:
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": "never-used", "endpoint_url": "http://127.0.0.1:9"}},
        "services": {SERVICE: {"type": "localdir", "source": {"path": str(folder)},
                               "validate": {"csv": {"columns": ["id", "amount"], "types": {"id": "int", "amount": "float"}}},
                               "destination": {"type": "local", "path": landing}, **service}},
    })
    return project.write_batch([{"job_id": "job_1", "service_id": SERVICE}])


def tree(root: Path) -> list[str]:
    """Every file under ``root`` but our index, as relative paths."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.relative_to(root).as_posix().startswith("_module_system/"))


def manifest(landing: Path) -> dict[str, Any]:
    return json.loads((landing / "_manifests" / SERVICE / "job_1.json").read_text())  # type: ignore[no-any-return]


def statuses(landing: Path) -> dict[str, str]:
    return {unquote(Path(f["source_uri"]).name): f["status"] for f in manifest(landing)["files"]}


def test_files_land_in_the_same_layout_and_a_re_run_rewrites_nothing(project: Project, folder: Path) -> None:
    batch = write(project, folder, "landing")  # relative to the registry's folder
    landing = project.root / "landing"
    first = project.run("--batch-file", str(batch), "--report", "report.json")
    assert first.returncode == 1, first.stderr[-2000:]  # one file rejected
    valid, rejected = f"data/localdir/{SERVICE}/validated", f"data/localdir/{SERVICE}/rejected"
    assert tree(landing) == sorted([
        f"_manifests/{SERVICE}/job_1.json", f"{rejected}/bad.csv", f"{rejected}/bad.csv.errors.json",
        f"{valid}/good.csv", f"{valid}/sub/also good.csv"])
    assert (landing / valid / "good.csv").read_text() == GOOD
    errors = json.loads((landing / rejected / "bad.csv.errors.json").read_text())
    assert "amount" in json.dumps(errors["errors"])
    assert statuses(landing) == {"good.csv": "uploaded", "also good.csv": "uploaded", "bad.csv": "rejected"}
    assert not [p for p in landing.rglob("*.part")], "no temp file is left"
    stamps = {p: p.stat().st_mtime_ns for p in (landing / valid).rglob("*.csv")}

    second = project.run("--batch-file", str(batch), "--report", "report.json")
    assert second.returncode == 1, second.stderr[-2000:]
    assert statuses(landing) == {"good.csv": "skipped_same", "also good.csv": "skipped_same", "bad.csv": "rejected"}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "skip-same rewrote nothing"
    assert project.report()["jobs"][0]["files"]["skipped_same"] == 2


def test_a_fixed_file_replaces_its_rejected_copy(project: Project, folder: Path, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    batch = write(project, folder, str(landing))
    assert project.run("--batch-file", str(batch)).returncode == 1
    rejected = landing / f"data/localdir/{SERVICE}/rejected"
    assert (rejected / "bad.csv").exists()
    (folder / "bad.csv").write_text(GOOD)
    assert project.run("--batch-file", str(batch)).returncode == 0
    assert not (rejected / "bad.csv").exists() and not (rejected / "bad.csv.errors.json").exists()
    assert (landing / f"data/localdir/{SERVICE}/validated/bad.csv").read_text() == GOOD


def test_a_file_someone_else_put_at_a_key_is_checked_by_content(project: Project, folder: Path,
                                                               tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    target = landing / f"data/localdir/{SERVICE}/validated/good.csv"
    target.parent.mkdir(parents=True)
    target.write_text("stale content\n")
    batch = write(project, folder, str(landing))
    assert project.run("--batch-file", str(batch)).returncode == 1
    assert target.read_text() == GOOD and statuses(landing)["good.csv"] == "uploaded"
    target.parent.joinpath("sub/also good.csv").unlink()
    os.utime(target, ns=(1, 1))  # touched: the index no longer vouches for it; same content
    assert project.run("--batch-file", str(batch)).returncode == 1
    assert statuses(landing)["good.csv"] == "skipped_same" and statuses(landing)["also good.csv"] == "uploaded"


def test_incremental_runs_read_the_last_manifest_from_the_folder(project: Project, folder: Path,
                                                                 tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    batch = write(project, folder, str(landing), incremental=True)
    assert project.run("--batch-file", str(batch)).returncode == 1
    assert project.run("--batch-file", str(batch)).returncode == 1
    assert statuses(landing) == {"good.csv": "skipped_unchanged", "also good.csv": "skipped_unchanged",
                                 "bad.csv": "rejected"}


@pytest.mark.parametrize("prefix", ["../outside/", "data/../../outside/"])
def test_a_prefix_that_leaves_the_folder_is_a_config_error(project: Project, folder: Path, tmp_path: Path,
                                                           prefix: str) -> None:
    landing = tmp_path / "landing"
    project.write_registry({
        "version": 1,
        "services": {SERVICE: {"type": "localdir", "source": {"path": str(folder)},
                               "destination": {"type": "local", "path": str(landing), "prefix": prefix}}},
    })
    batch = project.write_batch([{"job_id": "job_1", "service_id": SERVICE}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert f"service '{SERVICE}'" in line and "key 'destination.prefix'" in line and "'..'" in line, line
    assert not (tmp_path / "outside").exists()


def test_a_path_that_is_a_file_stops_the_run_before_any_job(project: Project, folder: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    batch = write(project, folder, str(blocker / "landing"))
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if not line.startswith("{")]
    assert len(lines) == 1 and f"service '{SERVICE}'" in lines[0] and "cannot be written" in lines[0], lines
