"""Compressed files and other formats (issue 13, item 2): a ``.csv.gz``/``.bz2``/``.xz`` is checked by
the rules of what it holds, a ``.zip`` or tar member by member, streamed, with a bound on the expanded
size (bombs refused with flat memory); ``unpack: true`` lands an archive's members; ``.parquet`` and
``.xlsx`` files are checked row by row."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path
from typing import Any

from tests.bombs import tar_gz_bomb, zip_bomb
from tests.e2e.helpers import Project, list_keys

GOOD = b"id,amount\n1,2.5\n2,3.0\n"
BAD = b"id,amount\n1,2.5\n2,lots\n"


def test_compressed_csv_is_checked_by_its_content(project: Project, s3: Any, bucket: str, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    files = {
        "good.csv.gz": gzip.compress(GOOD), "good.csv.bz2": bz2.compress(GOOD), "good.csv.xz": lzma.compress(GOOD),
        "bad.csv.gz": gzip.compress(BAD),
        "bomb.csv.gz": gzip.compress(b"id,amount\n" + b"1,2.5\n" * (3 << 20)),  # ~18 MiB expanded, ~20 KB packed
        "broken.csv.gz": gzip.compress(GOOD)[:-12] + b"garbage!",
    }
    old = time.time() - 60
    for name, data in files.items():
        (drop / name).write_bytes(data)
        os.utime(drop / name, (old, old))
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"drop": {"type": "local", "source": {"path": str(drop)},
                              "validate": {"csv": {"columns": ["id", "amount"], "types": {"id": "int", "amount": "float"}},
                                           "max_expanded_mb": 1}}},
    })
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    result = project.run("--batch-file", str(batch), "--report", "r.json")
    assert result.returncode == 1, result.stderr[-2000:]
    valid = sorted(k.rsplit("/", 1)[-1] for k in list_keys(s3, bucket, "data/local/drop/validated/"))
    assert valid == ["good.csv.bz2", "good.csv.gz", "good.csv.xz"]

    def errors(name: str) -> list[dict[str, Any]]:
        body = s3.get_object(Bucket=bucket, Key=f"data/local/drop/rejected/{name}.errors.json")["Body"].read()
        return json.loads(body)["errors"]  # type: ignore[no-any-return]

    [problem] = errors("bad.csv.gz")
    assert problem["location"] == "row 3, column 'amount'", problem
    assert "compression bomb" in errors("bomb.csv.gz")[0]["message"]
    assert errors("broken.csv.gz")[0]["message"].startswith("not a valid gz file")
    assert not list(drop.parent.rglob("*.expanded")), "no expanded temp file is left"


# --------------------------------------------------------------------------- archives, Parquet, Excel

PEAK_RSS_LIMIT_MB = 300


def drop_folder(tmp_path: Path, files: dict[str, bytes]) -> Path:
    drop = tmp_path / "drop"
    drop.mkdir(exist_ok=True)
    old = time.time() - 60
    for name, data in files.items():
        (drop / name).parent.mkdir(parents=True, exist_ok=True)
        (drop / name).write_bytes(data)
        os.utime(drop / name, (old, old))
    return drop


def zip_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def tar_gz_of(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def local_registry(project: Project, bucket: str, drop: Path, **service: Any) -> None:
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"drop": {"type": "local", "source": {"path": str(drop)}, **service}},
    })


def rejected_errors(s3: Any, bucket: str, name: str) -> list[dict[str, Any]]:
    body = s3.get_object(Bucket=bucket, Key=f"data/local/drop/rejected/{name}.errors.json")["Body"].read()
    return json.loads(body)["errors"]  # type: ignore[no-any-return]


CSV_RULES = {"columns": ["id", "amount"], "types": {"id": "int", "amount": "float"}}


def test_archives_are_checked_member_by_member_and_bombs_refused_with_flat_memory(
        project: Project, s3: Any, bucket: str, tmp_path: Path) -> None:
    drop = drop_folder(tmp_path, {
        "good.zip": zip_of({"a.csv": GOOD, "sub/b.csv.gz": gzip.compress(GOOD)}),
        "good.tar.gz": tar_gz_of({"a.csv": GOOD}),
        "bad.zip": zip_of({"data/x.csv": BAD, "ok.csv": GOOD, "../evil.csv": GOOD}),
        "bad.tgz": tar_gz_of({"y.csv": BAD}),
        "bomb.zip": zip_bomb(3072),                   # 3 GiB of zeros in ~3 MB, declared honestly
        "liar.zip": zip_bomb(3072, declared=1000),    # the same, its headers saying 1000 bytes
        "bomb.tar.gz": tar_gz_bomb(3072),             # 3 GiB of zeros in one tar member
    })
    local_registry(project, bucket, drop, validate={"csv": CSV_RULES, "max_expanded_mb": 64})
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    rss_file = project.root / "peak_rss_kib"
    script = Path(__file__).with_name("peak_rss.py")
    result = subprocess.run([sys.executable, str(script), str(rss_file), "--batch-file", str(batch)],
                            cwd=project.root, env={**project.env, "LOG_LEVEL": "INFO"}, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    valid = sorted(k.rsplit("/", 1)[-1] for k in list_keys(s3, bucket, "data/local/drop/validated/"))
    assert valid == ["good.tar.gz", "good.zip"]
    assert {(e["location"], e["message"]) for e in rejected_errors(s3, bucket, "bad.zip")} == {
        ("bad.zip!data/x.csv row 3, column 'amount'", "not a valid float: 'lots'"),
        ("bad.zip!../evil.csv", "unsafe member name: a '..' segment leaves the archive")}
    assert [e["location"] for e in rejected_errors(s3, bucket, "bad.tgz")] == ["bad.tgz!y.csv row 3, column 'amount'"]
    [bomb] = rejected_errors(s3, bucket, "bomb.zip")
    assert bomb["location"] == "bomb.zip" and "declare 3072 MiB" in bomb["message"]
    assert "compression bomb" in bomb["message"]
    [liar] = rejected_errors(s3, bucket, "liar.zip")
    assert liar["message"].startswith("not a valid zip file: BadZipFile: Bad CRC-32"), liar
    [tar_bomb] = rejected_errors(s3, bucket, "bomb.tar.gz")
    assert "expands past validate.max_expanded_mb (64 MiB)" in tar_bomb["message"]
    peak_mb = int(rss_file.read_text()) / 1024
    assert peak_mb < PEAK_RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB checking 9 GiB of bombs"
    print(f"\narchive bombs (3 x 3 GiB): peak RSS of the CLI process {peak_mb:.0f} MB")
    assert not [p for p in tmp_path.rglob("*") if ".member" in p.name or ".expanded" in p.name]


def test_unpack_lands_the_members_of_an_archive(project: Project, s3: Any, bucket: str, tmp_path: Path) -> None:
    drop = drop_folder(tmp_path, {
        "in/feed.zip": zip_of({"2026/a.csv": GOOD, "2026/b.csv": BAD, "../up.csv": GOOD, "notes.txt": b"x"}),
        "feed.tar.gz": tar_gz_of({"c.csv": GOOD}),
        "bomb.zip": zip_bomb(512),
        "plain.csv": GOOD,
    })
    local_registry(project, bucket, drop, unpack=True, on_unchecked="accept",
                   validate={"csv": CSV_RULES, "max_expanded_mb": 16})
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 1, result.stderr[-2000:]  # a member was rejected
    assert list_keys(s3, bucket, "data/local/drop/validated/") == [
        "data/local/drop/validated/feed.tar.gz/c.csv",
        "data/local/drop/validated/in/feed.zip/2026/a.csv",
        "data/local/drop/validated/in/feed.zip/notes.txt",
        "data/local/drop/validated/plain.csv"]
    assert list_keys(s3, bucket, "data/local/drop/rejected/") == [
        "data/local/drop/rejected/in/feed.zip/2026/b.csv", "data/local/drop/rejected/in/feed.zip/2026/b.csv.errors.json"]
    assert s3.get_object(Bucket=bucket, Key="data/local/drop/validated/in/feed.zip/2026/a.csv")["Body"].read() == GOOD
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="_manifests/drop/j1.json")["Body"].read())
    by_uri = {f["source_uri"].split("drop/", 1)[1]: f for f in manifest["files"]}
    assert by_uri["in/feed.zip!2026/a.csv"]["status"] == "uploaded"
    assert by_uri["in/feed.zip!2026/b.csv"]["status"] == "rejected"
    assert by_uri["in/feed.zip!../up.csv"]["status"] == "rejected" and by_uri["in/feed.zip!../up.csv"]["key"] is None
    assert by_uri["bomb.zip"]["status"] == "rejected"
    assert "compression bomb" in json.dumps(by_uri["bomb.zip"])
    assert "in/feed.zip" not in by_uri, "the archive itself is not landed"


def test_bad_parquet_and_xlsx_are_rejected_with_row_and_column(project: Project, s3: Any, bucket: str,
                                                               tmp_path: Path) -> None:
    import datetime as dt

    import openpyxl
    import pyarrow as pa
    import pyarrow.parquet as pq

    def parquet(table: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        pq.write_table(pa.table(table), buffer)
        return buffer.getvalue()

    def xlsx(rows: list[list[Any]]) -> bytes:
        book = openpyxl.Workbook()
        for row in rows:
            book.active.append(row)
        buffer = io.BytesIO()
        book.save(buffer)
        return buffer.getvalue()

    drop = drop_folder(tmp_path, {
        "good.parquet": parquet({"id": [1, 2], "amount": [1.5, 2.0], "day": [dt.date(2026, 1, 1)] * 2}),
        "bad.parquet": parquet({"id": ["1", "two"], "amount": [1.5, 2.0], "day": [dt.date(2026, 1, 1)] * 2}),
        "good.xlsx": xlsx([["id", "amount"], [1, 2.5], [2, "3"]]),
        "bad.xlsx": xlsx([["id", "amount"], [1, 2.5], [2, "lots"]]),
        "rows.ndjson": b'{"id": 1}\n{"id": "x"}\n',
    })
    (tmp_path / "row.schema.json").write_text(json.dumps({"type": "object", "properties": {"id": {"type": "integer"}}}))
    local_registry(project, bucket, drop, validate={
        "parquet": {"columns": ["id", "amount", "day"], "types": {"id": "int", "amount": "float", "day": "date"}},
        "xlsx": CSV_RULES, "json_schema": str(tmp_path / "row.schema.json")})
    batch = project.write_batch([{"job_id": "j1", "service_id": "drop"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 1, result.stderr[-2000:]
    valid = sorted(k.rsplit("/", 1)[-1] for k in list_keys(s3, bucket, "data/local/drop/validated/"))
    assert valid == ["good.parquet", "good.xlsx"]
    assert [(e["location"], e["message"]) for e in rejected_errors(s3, bucket, "bad.parquet")] == [
        ("row 2, column 'id'", "not a valid int: 'two'")]
    assert [(e["location"], e["message"]) for e in rejected_errors(s3, bucket, "bad.xlsx")] == [
        ("row 3, column 'amount'", "not a valid float: 'lots'")]
    assert rejected_errors(s3, bucket, "rows.ndjson")[0]["location"].startswith("line 2")
