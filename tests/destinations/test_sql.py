"""The ``sql`` destination on its own, against SQLite and a real PostgreSQL (``postgres_url``)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from common.config_model import CsvRules, ValidateConfig
from common.interfaces.destination import (
    Column,
    DestinationSetup,
    DestinationUnusable,
    LandingFile,
    RecordsRefused,
    RecordTarget,
)
from common.records import columns_from_validate
from common.retry import RetryPolicy
from common.secret import Secret
from destinations.sql import LOAD_LOG, SqlDestination

RETRY = RetryPolicy(attempts=1, backoff_s=0, max_backoff_s=0)
TYPED = (Column("id", "int"), Column("day", "date"), Column("ok", "bool"), Column("note", "str"))


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    found: str = request.getfixturevalue("postgres_url")
    engine = sa.create_engine(found.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:  # a clean database for each test
        for name in sa.inspect(conn).get_table_names():
            conn.execute(sa.text(f'DROP TABLE "{name}"'))
    engine.dispose()
    return found


def make(tmp_path: Path, url: str, **config: Any) -> SqlDestination:
    setup = DestinationSetup(workers=4, timeout_s=5, state_dir=tmp_path, base_dir=tmp_path)
    base = {"url": Secret(url), "table": "t", "mode": "append", "schema_evolution": "reject", "batch_rows": 2}
    return SqlDestination({**base, **config}, setup)


def landing(tmp_path: Path, name: str, text: str) -> LandingFile:
    path = tmp_path / f"in-{hashlib.sha256(text.encode()).hexdigest()[:8]}-{name}"
    path.write_text(text)
    return LandingFile(path, name, len(text.encode()), hashlib.sha256(text.encode()).hexdigest(), f"x:///{name}")


def target(columns: tuple[Column, ...] = TYPED, run_id: str = "run-1") -> RecordTarget:
    return RecordTarget("svc", "job", run_id, columns)


def select(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql))]
    finally:
        engine.dispose()


def test_csv_rows_typed_and_loaded_once(tmp_path: Path, url: str) -> None:
    dest = make(tmp_path, url)
    dest.check(RETRY)
    file = landing(tmp_path, "a.csv", "id,day,ok,note\n1,2026-11-01,yes,x\n2,2026-11-02,0,\n3,,true,z\n")
    assert dest.load(file, target(), RETRY).status == "uploaded"
    assert dest.load(file, target(), RETRY).status == "skipped_same"
    rows = select(url, "SELECT id, note FROM t ORDER BY id")
    assert rows == [(1, "x"), (2, None), (3, "z")]
    assert select(url, f"SELECT table_name, rows, job_id FROM {LOAD_LOG}") == [("t", 3, "job")]
    dest.close()


def test_json_array_object_lines_and_records_path(tmp_path: Path, url: str) -> None:
    cols = (Column("id", "int", required=True), Column("tags", "json"))
    dest = make(tmp_path, url, records_path="data.items")
    first = {"data": {"items": [{"id": 1, "tags": ["a"]}]}}
    assert dest.load(landing(tmp_path, "a.json", json.dumps(first)), target(cols), RETRY).rows == 1
    doc = {"data": {"items": [{"id": 2, "tags": {"k": 1}, "extra": "e"}]}}
    with pytest.raises(RecordsRefused, match="extra"):  # a column the table lacks, under reject
        dest.load(landing(tmp_path, "d.json", json.dumps(doc)), target(cols), RETRY)
    evolving = make(tmp_path, url, records_path="data.items", schema_evolution="add_columns")
    assert evolving.load(landing(tmp_path, "d.json", json.dumps(doc)), target(cols), RETRY).rows == 1
    one = make(tmp_path, url, schema_evolution="add_columns")
    assert one.load(landing(tmp_path, "o.json", json.dumps({"id": 5})), target(cols), RETRY).rows == 1
    text = json.dumps({"id": 3, "extra": "f", "more": 1.5}) + "\n\n" + json.dumps({"id": 4}) + "\n"
    assert one.load(landing(tmp_path, "l.jsonl", text), target(cols), RETRY).rows == 2
    assert select(url, "SELECT id, extra, more FROM t ORDER BY id") == [
        (1, None, None), (2, "e", None), (3, "f", 1.5), (4, None, None), (5, None, None)]
    for d in (dest, evolving, one):
        d.close()


def test_a_bad_value_in_the_last_row_loads_nothing(tmp_path: Path, url: str) -> None:
    dest = make(tmp_path, url)
    dest.check(RETRY)  # the run's pre-flight creates the load log
    rows = "".join(f"{i},2026-11-01,yes,n\n" for i in range(10))
    bad = landing(tmp_path, "bad.csv", "id,day,ok,note\n" + rows + "11,2026-11-01,maybe,n\n")
    with pytest.raises(RecordsRefused) as refused:
        dest.load(bad, target(), RETRY)
    assert refused.value.problems[0].location == "row 12, column 'ok'"
    assert select(url, "SELECT count(*) FROM t") == [(0,)]
    assert select(url, f"SELECT count(*) FROM {LOAD_LOG}") == [(0,)]
    dest.close()


def test_merge_upserts_and_the_last_record_of_a_key_wins(tmp_path: Path, url: str) -> None:
    dest = make(tmp_path, url, mode="merge", primary_key=["id"])
    dest.load(landing(tmp_path, "a.csv", "id,day,ok,note\n1,2026-11-01,yes,a\n2,2026-11-01,yes,b\n"), target(), RETRY)
    dest.load(landing(tmp_path, "b.csv", "id,day,ok,note\n2,2026-11-02,no,B\n3,2026-11-03,no,c\n2,2026-11-04,no,BB\n"),
              target(), RETRY)
    assert select(url, "SELECT id, note FROM t ORDER BY id") == [(1, "a"), (2, "BB"), (3, "c")]
    dest.close()


def test_replace_empties_the_table_once_per_run(tmp_path: Path, url: str) -> None:
    first = make(tmp_path, url, mode="replace")
    first.load(landing(tmp_path, "a.csv", "id,day,ok,note\n1,2026-11-01,yes,a\n"), target(run_id="r1"), RETRY)
    first.load(landing(tmp_path, "b.csv", "id,day,ok,note\n2,2026-11-01,yes,b\n"), target(run_id="r1"), RETRY)
    assert select(url, "SELECT id FROM t ORDER BY id") == [(1,), (2,)]
    first.close()
    second = make(tmp_path, url, mode="replace")  # the next run: its first load replaces
    second.load(landing(tmp_path, "c.csv", "id,day,ok,note\n3,2026-11-01,yes,c\n"), target(run_id="r2"), RETRY)
    assert select(url, "SELECT id FROM t ORDER BY id") == [(3,)]
    second.close()


def test_two_threads_loading_one_file_load_it_once(tmp_path: Path, url: str) -> None:
    dest = make(tmp_path, url)
    dest.load(landing(tmp_path, "seed.csv", "id,day,ok,note\n0,2026-11-01,yes,s\n"), target(), RETRY)
    file = landing(tmp_path, "a.csv", "id,day,ok,note\n" + "".join(f"{i},2026-11-01,yes,n\n" for i in range(1, 500)))
    outcomes: list[str] = []
    threads = [threading.Thread(target=lambda: outcomes.append(dest.load(file, target(), RETRY).status))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["skipped_same", "uploaded"]
    assert select(url, "SELECT count(*) FROM t") == [(500,)]
    dest.close()


def test_columns_from_the_validate_section() -> None:
    csv = ValidateConfig(None, None, CsvRules(("id", "d", "x"), {"id": "int", "d": "date"}, ",", True), None)
    assert columns_from_validate(csv) == (Column("id", "int"), Column("d", "date"), Column("x", "str"))
    schema = {"type": "object", "required": ["a"], "properties": {
        "a": {"type": "integer"}, "b": {"type": ["number", "null"]}, "c": {"type": "string", "format": "date-time"},
        "e": {"type": "object"}, "f": {"type": "boolean"}}}
    js = ValidateConfig(None, schema, None, None)
    assert columns_from_validate(js) == (Column("a", "int", True), Column("b", "float"), Column("c", "datetime"),
                                         Column("e", "json"), Column("f", "bool"))
    assert columns_from_validate(ValidateConfig(None, None, None, None)) == ()


def test_files_without_records_are_refused(tmp_path: Path) -> None:
    dest = make(tmp_path, f"sqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(RecordsRefused, match="no records in .html files"):
        dest.load(landing(tmp_path, "page.html", "<html></html>"), target(), RETRY)


def test_the_password_is_never_shown_and_check_tells_down_from_refused(tmp_path: Path, postgres_url: str) -> None:
    secret = "pg-test-pw-83b1f0"
    assert secret in postgres_url
    dest = make(tmp_path, postgres_url)
    assert secret not in dest.describe() and "***" in dest.describe()
    down = make(tmp_path, f"postgresql://module:{secret}@127.0.0.1:9/ingest")
    down.check(RETRY)  # only a warning: the run goes on, its files fail for this destination
    with pytest.raises(Exception) as failed:
        down.load(landing(tmp_path, "a.csv", "id,day,ok,note\n1,2026-11-01,yes,a\n"), target(), RETRY)
    assert secret not in str(failed.value) and "127.0.0.1" in str(failed.value)
    wrong = make(tmp_path, postgres_url.replace(secret, "not-the-password"))
    with pytest.raises(DestinationUnusable, match="password authentication failed") as unusable:
        wrong.check(RETRY)
    assert "not-the-password" not in str(unusable.value)
    nodb = make(tmp_path, postgres_url.rsplit("/", 1)[0] + "/no_such_db")
    with pytest.raises(DestinationUnusable, match="does not exist"):
        nodb.check(RETRY)
    for d in (dest, down, wrong, nodb):
        d.close()


def test_datetime_values_round_trip(tmp_path: Path, url: str) -> None:
    dest = make(tmp_path, url)
    cols = (Column("id", "int"), Column("at", "datetime"))
    dest.load(landing(tmp_path, "a.csv", "id,at\n1,2026-11-01T10:00:00Z\n2,2026-11-01T12:30:00+02:00\n"),
              target(cols), RETRY)
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        table = sa.Table("t", sa.MetaData(), autoload_with=conn)
        got = [r.at for r in conn.execute(sa.select(table).order_by(table.c.id))]
    engine.dispose()
    utc = [v if v.tzinfo is None else v.astimezone(dt.timezone.utc).replace(tzinfo=None) for v in got]
    assert utc == [dt.datetime(2026, 11, 1, 10, 0), dt.datetime(2026, 11, 1, 10, 30)]
    dest.close()


def test_compressed_files_load_like_plain_ones(tmp_path: Path, url: str) -> None:
    import bz2
    import gzip

    dest = make(tmp_path, url)
    dest.check(RETRY)
    text = "id,day,ok,note\n1,2026-11-01,yes,gz\n2,2026-11-02,no,gz\n"
    packed = tmp_path / "a.csv.gz"
    packed.write_bytes(gzip.compress(text.encode()))
    file = LandingFile(packed, "a.csv.gz", packed.stat().st_size, hashlib.sha256(packed.read_bytes()).hexdigest(),
                       "x:///a.csv.gz")
    assert dest.load(file, target(), RETRY).rows == 2
    lines = tmp_path / "b.jsonl.bz2"
    lines.write_bytes(bz2.compress(b'{"id": 3, "note": "bz2"}\n'))
    other = LandingFile(lines, "b.jsonl.bz2", lines.stat().st_size, hashlib.sha256(lines.read_bytes()).hexdigest(),
                        "x:///b.jsonl.bz2")
    assert dest.load(other, target(), RETRY).rows == 1
    assert select(url, "SELECT id, note FROM t ORDER BY id") == [(1, "gz"), (2, "gz"), (3, "bz2")]
    broken = tmp_path / "c.csv.gz"
    broken.write_bytes(gzip.compress(text.encode())[:-10] + b"garbage!!!")
    bad = LandingFile(broken, "c.csv.gz", broken.stat().st_size, hashlib.sha256(broken.read_bytes()).hexdigest(),
                      "x:///c.csv.gz")
    with pytest.raises(RecordsRefused):
        dest.load(bad, target(), RETRY)
    assert select(url, "SELECT count(*) FROM t") == [(3,)]
    dest.close()


def test_parquet_rows_load_typed(tmp_path: Path, url: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dest = make(tmp_path, url)
    dest.check(RETRY)
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "day": [dt.date(2026, 11, 1), None, dt.date(2026, 11, 3)],
                             "ok": [True, False, None], "note": ["p", "q", None]}), path, row_group_size=2)
    file = LandingFile(path, "a.parquet", path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest(),
                       "x:///a.parquet")
    assert dest.load(file, target(), RETRY).rows == 3
    rows = select(url, "SELECT id, note FROM t ORDER BY id")
    assert rows == [(1, "p"), (2, "q"), (3, None)]
    bad = tmp_path / "b.parquet"
    pq.write_table(pa.table({"id": ["x"]}), bad)
    refused = LandingFile(bad, "b.parquet", bad.stat().st_size, hashlib.sha256(bad.read_bytes()).hexdigest(),
                          "x:///b.parquet")
    with pytest.raises(RecordsRefused, match="row 1"):
        dest.load(refused, target(), RETRY)
    dest.close()
