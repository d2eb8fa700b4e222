"""Rows in SQLite and PostgreSQL through the CLI (issue 12, the ``sql`` destination), against a
real FTP server, moto over HTTP and a throwaway PostgreSQL cluster (``postgres_url``).

What is checked: typed columns from the service's ``validate`` section; a rejected file loads
no row; a re-run loads nothing twice; ``merge`` upserts on the primary key; a kill during a
load leaves all of a file or none of it and the re-run completes it; fan-out S3 + PostgreSQL
with the database down for the first run, where the re-run fills only the database.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.e2e.helpers import Project, list_keys

SALES_OK = "id,date,amount,name\n1,2026-11-01,10.5,ann\n2,2026-11-02,7.25,bob\n"
SALES_MORE = "id,date,amount,name\n3,2026-11-03,1.0,cid\n"
SALES_BAD = "id,date,amount,name\n4,2026-11-04,not-a-number,dan\n"
CSV_RULES = {"csv": {"columns": ["id", "date", "amount", "name"],
                     "types": {"id": "int", "date": "date", "amount": "float"}}}


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rows.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def rows(url: str, table: str, order: str = "id") -> list[dict[str, Any]]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:  # through the reflected table: its column types read the values
            reflected = sa.Table(table, sa.MetaData(), autoload_with=conn)
            result = conn.execute(sa.select(reflected).order_by(reflected.c[order]))
            return [dict(r._mapping) for r in result]
    finally:
        engine.dispose()


def count(url: str, table: str) -> int:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one())
    finally:
        engine.dispose()


def drop(url: str, *tables: str) -> None:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            for table in tables:
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
            conn.execute(sa.text("DROP TABLE IF EXISTS _module_system_loads"))
    finally:
        engine.dispose()


def ftp_sql_registry(project: Project, bucket: str, ftp_server: Any, folder: str,
                     service: dict[str, Any] | None = None, **sql: Any) -> Path:
    project.env["DB_URL"] = sql.pop("url")
    project.write_ftp_registry(bucket, ftp_server, folder, validate=CSV_RULES, **(service or {}),
                               destination=[{"bucket": bucket}, {"type": "sql", "url": "${DB_URL}", **sql}])
    return project.write_batch([{"job_id": "sales_1", "service_id": "sales"}])


def test_ftp_csv_lands_as_typed_rows_once(project: Project, s3: Any, bucket: str, ftp_server: Any, ftp_dir: Path,
                                          db_url: str) -> None:
    drop(db_url, "sales")
    (ftp_dir / "a.csv").write_text(SALES_OK)
    (ftp_dir / "b.csv").write_text(SALES_MORE)
    (ftp_dir / "bad.csv").write_text(SALES_BAD)
    batch = ftp_sql_registry(project, bucket, ftp_server, ftp_dir.name, url=db_url, table="sales")
    first = project.run("--batch-file", str(batch), "--report", "report.json")
    assert first.returncode == 1, first.stderr[-3000:]  # bad.csv is rejected
    got = rows(db_url, "sales")
    types = {c["name"]: c["type"] for c in sa.inspect(sa.create_engine(
        db_url.replace("postgresql://", "postgresql+psycopg://", 1))).get_columns("sales")}
    assert isinstance(types["id"], sa.BigInteger) and isinstance(types["date"], sa.Date)
    assert isinstance(types["amount"], sa.Float) and isinstance(types["name"], sa.Text)
    assert got == [
        {"id": 1, "date": dt.date(2026, 11, 1), "amount": 10.5, "name": "ann"},
        {"id": 2, "date": dt.date(2026, 11, 2), "amount": 7.25, "name": "bob"},
        {"id": 3, "date": dt.date(2026, 11, 3), "amount": 1.0, "name": "cid"},
    ], "typed rows of the valid files; none of the rejected one"
    keys = list_keys(s3, bucket)
    assert "data/ftp/sales/rejected/bad.csv" in keys and "data/ftp/sales/validated/a.csv" in keys
    job = project.report()["jobs"][0]
    assert job["files"]["uploaded"] == 2 and job["files"]["rejected"] == 1

    second = project.run("--batch-file", str(batch), "--report", "report.json")
    assert second.returncode == 1, second.stderr[-3000:]
    assert count(db_url, "sales") == 3, "a re-run loads nothing twice"
    assert project.report()["jobs"][0]["files"]["skipped_same"] == 2
    password = sa.engine.make_url(db_url).password
    if password:
        logs = "".join(p.read_text() for p in (project.root / "temp" / "logs").glob("*.log"))
        assert password not in first.stdout + first.stderr + second.stdout + second.stderr + logs


def test_s3_json_lines_merge_on_the_primary_key(project: Project, s3: Any, bucket: str, db_url: str) -> None:
    drop(db_url, "readings")
    source = f"{bucket}-src"
    s3.create_bucket(Bucket=source)
    lines = [{"station": "a", "day": "2026-11-01", "temp": 1.5}, {"station": "b", "day": "2026-11-01", "temp": 2.0}]
    s3.put_object(Bucket=source, Key="in/day1.jsonl", Body="\n".join(json.dumps(r) for r in lines) + "\n")
    (project.root / "reading.schema.json").write_text(json.dumps({
        "type": "object", "required": ["station", "day"],
        "properties": {"station": {"type": "string"}, "day": {"type": "string", "format": "date"},
                       "temp": {"type": "number"}}}))
    project.env["DB_URL"] = db_url
    project.write_registry({
        "version": 1,
        "defaults": {"destination": {"bucket": bucket, "endpoint_url": "${S3_URL}"}},
        "services": {"readings": {
            "type": "s3", "source": {"bucket": source, "prefix": "in/", "endpoint_url": "${S3_URL}"},
            "validate": {"json_schema": "reading.schema.json"},
            "destination": [{"bucket": bucket}, {"type": "sql", "url": "${DB_URL}", "table": "readings",
                                                 "mode": "merge", "primary_key": ["station", "day"]}]}},
    })
    batch = project.write_batch([{"job_id": "readings_1", "service_id": "readings"}])
    assert project.run("--batch-file", str(batch)).returncode == 0
    update = [{"station": "b", "day": "2026-11-01", "temp": 3.5}, {"station": "c", "day": "2026-11-02", "temp": 0.5}]
    s3.put_object(Bucket=source, Key="in/day1-fix.jsonl", Body="\n".join(json.dumps(r) for r in update))
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 0, result.stderr[-3000:]
    got = {(r["station"], r["day"]): r["temp"] for r in rows(db_url, "readings", "station")}
    assert got == {("a", dt.date(2026, 11, 1)): 1.5, ("b", dt.date(2026, 11, 1)): 3.5,
                   ("c", dt.date(2026, 11, 2)): 0.5}


def test_a_kill_during_a_load_leaves_all_or_nothing_and_the_re_run_completes(
        project: Project, s3: Any, bucket: str, ftp_server: Any, ftp_dir: Path, postgres_url: str) -> None:
    drop(postgres_url, "big")
    total = 400_000
    with open(ftp_dir / "big.csv", "w") as out:
        out.write("id,date,amount,name\n")
        out.writelines(f"{i},2026-11-01,{i}.5,name-{i}\n" for i in range(total))
    batch = ftp_sql_registry(project, bucket, ftp_server, ftp_dir.name, url=postgres_url, table="big")
    env = dict(project.env)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli_init", "--batch-file", str(batch)],
                            cwd=project.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    engine = sa.create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        deadline = time.monotonic() + 60
        loading = False
        while time.monotonic() < deadline and proc.poll() is None:
            with engine.connect() as conn:
                active = conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'COPY%' OR query ILIKE 'INSERT INTO%big%'"
                )).scalar_one()
            if active:
                loading = True
                break
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert loading, "the load was seen in progress before the kill"
        time.sleep(0.5)  # the server notices the dead connection and rolls its transaction back
        with engine.connect() as conn:
            exists = sa.inspect(conn).has_table("big")
        assert not exists or count(postgres_url, "big") in (0, total), "all of the file or none of it"
    finally:
        engine.dispose()
    result = project.run("--batch-file", str(batch), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert count(postgres_url, "big") == total
    third = project.run("--batch-file", str(batch), timeout=300)
    assert third.returncode == 0 and count(postgres_url, "big") == total, "loaded exactly once"


def test_fan_out_with_the_database_down_then_up_fills_only_the_database(
        project: Project, s3: Any, s3_server: Any, bucket: str, ftp_server: Any, ftp_dir: Path,
        postgres_url: str) -> None:
    drop(postgres_url, "sales_fan")
    (ftp_dir / "a.csv").write_text(SALES_OK)
    (ftp_dir / "b.csv").write_text(SALES_MORE)
    down = "postgresql://module:secret-pw-5c1d@127.0.0.1:9/nowhere"
    batch = ftp_sql_registry(project, bucket, ftp_server, ftp_dir.name, url=down, table="sales_fan",
                             service={"retry": {"attempts": 2, "backoff_s": 0.01, "max_backoff_s": 0.02}})
    first = project.run("--batch-file", str(batch), "--report", "report.json")
    assert first.returncode == 1, first.stderr[-3000:]
    assert "secret-pw-5c1d" not in first.stdout + first.stderr
    job = project.report()["jobs"][0]
    assert job["status"] == "failed" and job["files"]["failed"] == 2
    landed = list_keys(s3, bucket, "data/")
    assert landed == ["data/ftp/sales/validated/a.csv", "data/ftp/sales/validated/b.csv"]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="_manifests/sales/sales_1.json")["Body"].read())
    entry = manifest["files"][0]
    assert entry["destinations"]["s3"]["status"] == "uploaded" and entry["destinations"]["sql"]["status"] == "failed"

    project.env["DB_URL"] = postgres_url
    second = project.run("--batch-file", str(batch), "--report", "report.json")
    assert second.returncode == 0, second.stderr[-3000:]
    assert count(postgres_url, "sales_fan") == 3
    manifest = json.loads(s3.get_object(Bucket=bucket, Key="_manifests/sales/sales_1.json")["Body"].read())
    for entry in manifest["files"]:
        assert entry["destinations"] == {"s3": {"status": "skipped_same", "key": entry["key"]},
                                         "sql": {"status": "uploaded"}}, entry


def test_a_sql_destination_alone_is_a_config_error(project: Project, bucket: str, ftp_server: Any, ftp_dir: Path,
                                                    tmp_path: Path) -> None:
    project.env["DB_URL"] = f"sqlite:///{tmp_path / 'x.db'}"
    project.write_ftp_registry(bucket, ftp_server, ftp_dir.name,
                               destination={"type": "sql", "url": "${DB_URL}"})
    batch = project.write_batch([{"job_id": "sales_1", "service_id": "sales"}])
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "service 'sales'" in line and "key 'destination'" in line and "file destination" in line, line


def test_merge_without_a_primary_key_is_a_config_error(project: Project, bucket: str, ftp_server: Any,
                                                        ftp_dir: Path, tmp_path: Path) -> None:
    batch = ftp_sql_registry(project, bucket, ftp_server, ftp_dir.name, url=f"sqlite:///{tmp_path / 'x.db'}",
                             mode="merge")
    result = project.run("--batch-file", str(batch))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "service 'sales'" in line and "destination[1]" in line and "primary_key" in line, line
