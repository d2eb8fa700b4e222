"""Files no rule of their service can check follow ``on_unchecked`` (issue 10, item 18), through the CLI.

One FTP folder holds a valid CSV, a 7-Zip archive (``x.csv.7z``: no rule reads that format)
and a text file. Under a service with a ``validate`` section the compressed file and the
text file are rejected by default, with a problem saying no rule checks their type; under
a service without one they are accepted and their manifest entries say ``"unchecked": true``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import Project, list_keys

CSV = b"id,amount\n1,2.5\n2,3.0\n"
CSV_RULES = {"csv": {"columns": ["id", "amount"], "types": {"id": "int", "amount": "float"}}}


@pytest.fixture()
def folder(ftp_dir: Path, ftp_root: Path) -> str:
    (ftp_dir / "a.csv").write_bytes(CSV)
    (ftp_dir / "x.csv.7z").write_bytes(b"7z\xbc\xaf\x27\x1c not read")  # no rule reads a .7z archive
    (ftp_dir / "notes").write_bytes(b"no suffix at all\n")
    return "/" + ftp_dir.relative_to(ftp_root).as_posix()


def registry(project: Project, bucket: str, ftp_server: Any, folder: str,  # noqa: ANN401
             services: dict[str, dict[str, Any]]) -> None:
    project.env.update({"FTP_PORT": str(ftp_server.port), "FTP_PASSWORD": ftp_server.password})
    source = {"host": "127.0.0.1", "port": "${FTP_PORT}", "user": ftp_server.user,
              "password": "${FTP_PASSWORD}", "path": folder}
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"},
                     "retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.05}, "timeout_s": 10},
        "services": {sid: {"type": "ftp", "source": source, **body} for sid, body in services.items()},
    })


def read_json(s3, bucket: str, key: str) -> Any:  # noqa: ANN001, ANN401
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_unchecked_files_are_rejected_under_validate_and_accepted_and_marked_without(
        project: Project, s3, bucket: str, ftp_server, folder: str) -> None:  # noqa: ANN001
    registry(project, bucket, ftp_server, folder, {
        "checked": {"validate": CSV_RULES},                   # default: reject
        "open": {"on_unchecked": "accept"},                   # no validate: accept (said explicitly)
        "lenient": {"validate": CSV_RULES, "on_unchecked": "accept"},
    })
    batch = project.write_batch([{"job_id": "checked_1", "service_id": "checked"},
                                 {"job_id": "open_1", "service_id": "open"},
                                 {"job_id": "lenient_1", "service_id": "lenient"}])
    result = project.run("--batch-file", str(batch), "--report", "report.json")
    assert result.returncode == 1, result.stderr  # files were rejected

    # with validate: the .7z archive and the suffix-less file are rejected, each with its reason
    assert list_keys(s3, bucket, "data/ftp/checked/") == [
        "data/ftp/checked/rejected/notes", "data/ftp/checked/rejected/notes.errors.json",
        "data/ftp/checked/rejected/x.csv.7z", "data/ftp/checked/rejected/x.csv.7z.errors.json",
        "data/ftp/checked/validated/a.csv"]
    errors = read_json(s3, bucket, "data/ftp/checked/rejected/x.csv.7z.errors.json")["errors"]
    assert errors == [{"location": "file type", "message": "not checked: no rule of this service's validate "
                       "section checks '.7z' files (it checks .csv); on_unchecked is reject"}]
    notes = read_json(s3, bucket, "data/ftp/checked/rejected/notes.errors.json")["errors"]
    assert "files without a suffix" in notes[0]["message"]
    checked = read_json(s3, bucket, "_manifests/checked/checked_1.json")["files"]
    assert {f["key"].rsplit("/", 1)[1]: f["status"] for f in checked} == {
        "a.csv": "uploaded", "notes": "rejected", "x.csv.7z": "rejected"}
    assert not any("unchecked" in f for f in checked)

    # without validate (and with validate but on_unchecked: accept): landed as valid, marked unchecked
    for sid in ("open", "lenient"):
        assert list_keys(s3, bucket, f"data/ftp/{sid}/") == [
            f"data/ftp/{sid}/validated/{n}" for n in ("a.csv", "notes", "x.csv.7z")]
        files = {f["key"].rsplit("/", 1)[1]: f for f in read_json(s3, bucket, f"_manifests/{sid}/{sid}_1.json")["files"]}
        assert {n: f["status"] for n, f in files.items()} == {"a.csv": "uploaded", "notes": "uploaded",
                                                             "x.csv.7z": "uploaded"}
        assert files["x.csv.7z"]["unchecked"] is True and files["notes"]["unchecked"] is True
        # a.csv: unchecked without validate, checked (no mark) where validate.csv applies
        assert files["a.csv"].get("unchecked", False) is (sid == "open")

    jobs = {j["job_id"]: j for j in project.report()["jobs"]}
    assert jobs["checked_1"]["status"] == "succeeded" and jobs["checked_1"]["files"]["rejected"] == 2
    assert jobs["open_1"]["files"]["uploaded"] == 3 and jobs["open_1"]["files"]["rejected"] == 0


def test_on_unchecked_is_checked_by_the_schema(project: Project, bucket: str, ftp_server, folder: str) -> None:  # noqa: ANN001
    registry(project, bucket, ftp_server, folder, {"bad": {"on_unchecked": "maybe"}})
    batch = project.write_batch([{"job_id": "bad_1", "service_id": "bad"}])
    result = project.cli("validate", "--batch-file", str(batch))
    assert result.returncode == 2
    assert "on_unchecked" in result.stderr and "Traceback" not in result.stderr
