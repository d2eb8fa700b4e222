"""The sql row: dataset A's validated CSV loaded into SQLite and PostgreSQL, against dlt.

Clients, each a child process, on the flat folder of dataset A (1,000 CSV files of ~100 KB,
about 1.4 million rows of ``id,day,ts,amount,name,active``: int, date, datetime, float, str,
bool):

* ``ms_sqlite`` / ``ms_postgres``: one ``type: localdir`` job (the example plugin, reading the
  folder), ``validate.csv`` with the dataset's columns and types, ``destination`` a list: the
  files to a ``local`` folder and their rows to ``sql`` (table ``a_rows``, mode append).
  Checked: every file landed, the table holds every row.
* ``dlt_sqlite`` / ``dlt_postgres``: ``python -m bench.sql_bench dlt``: a dlt pipeline whose
  resource reads the same files with ``csv.DictReader``, converts each cell to its type (the
  same conversions module_system applies) and declares the column types
  (``columns`` hints), into ``dlt.destinations.sqlalchemy`` (SQLite) or
  ``dlt.destinations.postgres``. Checked: the table holds every row.

PostgreSQL is one throwaway cluster (``python -m bench.servers postgres``); every run gets a
database of its own, made before the clock starts. The ratio is rows per second over the
whole process (start-up included for both): wall(dlt) / wall(module_system), per repeat.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import datasets as ds
from bench.measure import Sample, landed_files, run_process
from bench.rows import CliRun, Row, RowContext, file_totals, to_row_sample
from bench.servers import REPO

__all__ = ["SqlRow"]

TABLE = "a_rows"
_DLT_TYPES = {"int": "bigint", "float": "double", "date": "date", "datetime": "timestamp", "str": "text",
              "bool": "bool"}


class SqlRow(Row):
    name = "SQL"
    clients = ("ms_sqlite", "dlt_sqlite", "ms_postgres", "dlt_postgres")

    def __init__(self, ctx: RowContext) -> None:
        super().__init__(ctx)
        self.spec = ds.specs(ctx.quick, None)["A"]

    @property
    def measured(self) -> tuple[str, ...]:
        try:
            import dlt  # noqa: F401
        except ImportError:
            print("  SQL row: dlt is not installed (pip install 'dlt[postgres,sqlalchemy]'): its clients are skipped",
                  flush=True)
            return ("ms_sqlite", "ms_postgres")
        return self.clients

    def prepare(self) -> None:
        root = self.ctx.workdir / "ftp_root"
        root.mkdir(parents=True, exist_ok=True)
        data = ds.ensure(self.spec, root)
        self.folder = ds.ensure_flat(data)
        self.files = sorted(self.folder.glob("*.csv"))
        self.bytes = sum(p.stat().st_size for p in self.files)
        self.rows = sum(_data_rows(p) for p in self.files)
        self.pg = self.ctx.servers.start("postgres")
        self.pg_url = self.pg.info["url"]

    def run(self, client: str, repeat: int, wrap: Sequence[str] = ()) -> Sample:
        database = client.split("_", 1)[1]
        url = self._new_database(client, repeat) if database == "postgres" else self._sqlite_url(client, repeat)
        if client.startswith("dlt"):
            return self.run_dlt(client, repeat, database, url)
        return self.run_module(client, repeat, url, wrap)

    def run_module(self, client: str, repeat: int, url: str, wrap: Sequence[str]) -> Sample:
        landing = self.dir / f"{client}-{repeat}-landing"
        shutil.rmtree(landing, ignore_errors=True)
        service = {
            "type": "localdir", "source": {"path": str(self.folder)},
            "validate": {"csv": {"columns": list(ds.CSV_COLUMNS), "types": dict(ds.CSV_TYPES)}},
            "destination": [{"type": "local", "path": str(landing)}, {"type": "sql", "url": url, "table": TABLE}],
        }
        cli = CliRun(self.dir, f"{client}-{repeat}", {"version": 1, "services": {"bench_sql": service}},
                     [{"job_id": "load", "service_id": "bench_sql"}])
        result, report = cli.run(self.ctx.servers, {}, wrap=wrap)
        files = file_totals(report)
        loaded = _count(url)
        ok = (result.exit_code == 0 and files.get("uploaded") == len(self.files) and loaded == self.rows
              and len(landed_files(landing)) == len(self.files))
        note = f"{files.get('uploaded')} files landed, {loaded} of {self.rows} rows in {TABLE}"
        if ok:
            cli.discard()
            shutil.rmtree(landing, ignore_errors=True)
        return to_row_sample(result, self.name, client, repeat, len(self.files), self.bytes, ok, note,
                             file_statuses=files, rows=loaded)

    def run_dlt(self, client: str, repeat: int, database: str, url: str) -> Sample:
        work = self.dir / f"{client}-{repeat}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        argv = [sys.executable, "-m", "bench.sql_bench", "dlt", "--folder", str(self.folder), "--database", database,
                "--url", url, "--work", str(work)]
        from bench.clients import base_env

        result = run_process(argv, cwd=REPO, env=base_env(self.ctx.servers), log=self.dir / f"{client}-{repeat}.log",
                             servers=self.ctx.servers)
        loaded = _dlt_count(database, url, work)
        ok = result.exit_code == 0 and loaded == self.rows
        note = f"{loaded} of {self.rows} rows in {TABLE}"
        if ok:
            shutil.rmtree(work, ignore_errors=True)
            result.log.unlink(missing_ok=True)
        return to_row_sample(result, self.name, client, repeat, len(self.files), self.bytes, ok, note, rows=loaded)

    def _new_database(self, client: str, repeat: int) -> str:
        """A fresh PostgreSQL database for one run (not timed)."""
        import sqlalchemy as sa

        name = f"bench_{client}_{repeat}"
        admin = sa.create_engine(_driver(self.pg_url), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return self.pg_url.rsplit("/", 1)[0] + "/" + name

    def _sqlite_url(self, client: str, repeat: int) -> str:
        path = self.dir / f"{client}-{repeat}.db"
        for stale in self.dir.glob(f"{client}-{repeat}*.db*"):
            stale.unlink()
        return f"sqlite:///{path}"


def _data_rows(path: Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in fh) - 1


def _driver(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def _count(url: str, table: str = TABLE) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(_driver(url))
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one())
    except sa.exc.SQLAlchemyError:
        return 0
    finally:
        engine.dispose()


def _dlt_count(database: str, url: str, work: Path) -> int:
    """Rows dlt loaded: its dataset ``bench`` (a schema in PostgreSQL, an attached file beside SQLite's)."""
    import sqlalchemy as sa

    if database == "postgres":
        return _count(url, f'bench"."{TABLE}')
    db = Path(url.removeprefix("sqlite:///"))
    for candidate in (db.with_name(f"{db.stem}__bench{db.suffix}"), db):
        if candidate.exists():
            engine = sa.create_engine(f"sqlite:///{candidate}")
            try:
                with engine.connect() as conn:
                    for name in sa.inspect(conn).get_table_names():
                        if name == TABLE:
                            return int(conn.execute(sa.text(f'SELECT count(*) FROM "{TABLE}"')).scalar_one())
            finally:
                engine.dispose()
    return 0


# ----------------------------------------------------------------------------- the dlt client


def _typed_rows(files: list[Path]) -> Iterator[dict[str, Any]]:
    from common.records import convert_cell

    types = ds.CSV_TYPES
    for path in files:
        with open(path, encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                yield {k: (None if v == "" else convert_cell(types[k], v)) for k, v in row.items()}  # type: ignore[index]


def run_dlt(folder: Path, database: str, url: str, work: Path) -> int:
    import dlt

    files = sorted(folder.glob("*.csv"))
    hints = {name: {"data_type": _DLT_TYPES[kind], "nullable": True} for name, kind in ds.CSV_TYPES.items()}
    resource = dlt.resource(_typed_rows(files), name=TABLE, write_disposition="append", columns=hints)
    if database == "postgres":
        destination = dlt.destinations.postgres(credentials=url)
    else:
        destination = dlt.destinations.sqlalchemy(credentials=url)
    pipeline = dlt.pipeline(pipeline_name=f"bench_{database}", destination=destination, dataset_name="bench",
                            pipelines_dir=str(work / "pipelines"))
    info = pipeline.run(resource)
    print(info, flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sql_bench", description="The sql row's dlt client.")
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("dlt", help="load the folder's CSV files with dlt")
    load.add_argument("--folder", type=Path, required=True)
    load.add_argument("--database", choices=["sqlite", "postgres"], required=True)
    load.add_argument("--url", required=True)
    load.add_argument("--work", type=Path, required=True)
    args = parser.parse_args(argv)
    started = dt.datetime.now()
    code = run_dlt(args.folder, args.database, args.url, args.work)
    print(f"dlt: {(dt.datetime.now() - started).total_seconds():.2f} s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
