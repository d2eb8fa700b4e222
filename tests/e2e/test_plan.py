"""``module-system plan`` (issue 13, item 5): what a run would do, from the listings, downloading nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.helpers import Project

CSV = "id,amount\n1,2.5\n"


def plan(project: Project, batch: Path) -> dict[str, Any]:
    result = project.cli("plan", "--batch-file", str(batch), "--format", "json")
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_plan_of_10000_files_downloads_nothing(project: Project, s3: Any, bucket: str, ftp_server: Any,
                                               ftp_dir: Path, ftp_root: Path) -> None:
    for i in range(10_000):
        (ftp_dir / f"f{i:05}.csv").write_text(CSV)
    project.write_ftp_registry(bucket, ftp_server, "/" + ftp_dir.relative_to(ftp_root).as_posix())
    batch = project.write_batch([{"job_id": "big", "service_id": "sales"}])
    retr_before = ftp_server.commands.count("RETR")
    planned = plan(project, batch)
    assert ftp_server.commands.count("RETR") == retr_before, "plan downloads nothing"
    [job] = planned["jobs"]
    assert job["status"] == "planned" and job["files"]["new"] == 10_000
    assert job["bytes"]["new"] == 10_000 * len(CSV)
    assert planned["totals"]["files"]["new"] == 10_000
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0, "and writes nothing"


def test_plan_tells_new_changed_unchanged_filtered_and_too_large(project: Project, s3: Any, bucket: str,
                                                                ftp_server: Any, ftp_dir: Path,
                                                                ftp_root: Path) -> None:
    for i in range(4):
        (ftp_dir / f"f{i}.csv").write_text(CSV)
    registry = yaml.safe_load(project.write_ftp_registry(
        bucket, ftp_server, "/" + ftp_dir.relative_to(ftp_root).as_posix(), incremental=True,
        max_file_bytes=1000).read_text())
    registry["services"]["sales"]["source"]["exclude"] = ["*.txt"]
    registry["services"]["web_news"] = {"type": "web", "source": {"urls": ["http://127.0.0.1:9/"]}}
    project.write_registry(registry)
    batch = project.write_batch([{"job_id": "day1", "service_id": "sales"}])
    assert project.run("--batch-file", str(batch)).returncode == 0

    (ftp_dir / "f1.csv").write_text(CSV * 3)          # changed
    (ftp_dir / "f9.csv").write_text(CSV)              # new
    (ftp_dir / "notes.txt").write_text("x")           # filtered
    (ftp_dir / "huge.csv").write_text(CSV * 200)      # too large
    day2 = project.write_batch([{"job_id": "day2", "service_id": "sales"},
                                {"job_id": "news", "service_id": "web_news"}], name="day2.json")
    retr_before = ftp_server.commands.count("RETR")
    planned = plan(project, day2)
    assert ftp_server.commands.count("RETR") == retr_before
    sales, news = planned["jobs"]
    assert sales["files"] == {"new": 1, "changed": 1, "unchanged": 3, "filtered": 1, "too_large": 1}
    actions = {e["name"]: e["action"] for e in sales["entries"]}
    assert actions == {"f0.csv": "unchanged", "f1.csv": "changed", "f2.csv": "unchanged", "f3.csv": "unchanged",
                       "f9.csv": "new", "notes.txt": "filtered", "huge.csv": "too_large"}
    assert news["status"] == "cannot_plan" and "listing" in news["error"]

    text = project.cli("plan", "--batch-file", str(day2))
    assert text.returncode == 0
    assert "day2  sales  new 1" in text.stdout and "news  web_news  cannot plan" in text.stdout
    assert "total: 2 file(s) to fetch" in text.stdout
