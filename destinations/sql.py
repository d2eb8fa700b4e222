"""The ``sql`` destination: the records of valid files as typed rows, through SQLAlchemy Core.

Any SQLAlchemy URL: ``sqlite:///path.db`` (embedded; a relative path is relative to the
working directory, as SQLAlchemy reads it), ``postgresql://user:pw@host/db`` (driven by
psycopg 3; the URL is a secret: only its password-free form is ever shown).

* **Columns** come from the service's ``validate`` section (CSV ``columns``/``types``, JSON
  Schema ``properties``/``required``; :func:`common.records.columns_from_validate`); keys a
  file brings beyond them take the type of their first value (``str`` for CSV). A table that
  does not exist is created with them (``primary_key`` as its primary key); one that exists
  is used as it is. A file with a column the table lacks is rejected under
  ``schema_evolution: reject`` (the default) and adds the column (nullable) under
  ``add_columns``.
* **Exactly once.** Each file is loaded in one transaction that also writes its row in the
  load log table ``_module_system_loads`` (table, sha256, scope, source, job, run, rows): a
  file whose sha256 the log holds for the table is ``skipped_same``; a crash before the commit
  leaves nothing, after it the log says the file is in. Two loads of one file at once: the
  log's primary key lets one commit.
* **Modes.** ``append`` adds the rows; ``merge`` upserts on ``primary_key`` (the last record
  of a key in a file wins); ``replace``: the run's first load into the table deletes its rows
  in the same transaction as that file's rows, later files of the run append (the table then
  holds what this run loaded; the load log is kept per run, so a re-run reloads).
* **Bulk paths.** PostgreSQL: ``COPY ... FROM STDIN`` (a CSV file's bytes go to the server
  as they are, already checked by the service's rules; JSON records row by row), merge
  through a temp table and ``INSERT ... ON CONFLICT DO UPDATE``. SQLite: ``executemany`` in
  batches of ``batch_rows``, writes to one database file one at a time (SQLite has one
  writer), WAL journal.
* **Errors.** Data the table cannot take (a constraint, a value of the wrong type) rejects
  the file (:class:`~common.interfaces.destination.RecordsRefused`); a connection that fails
  is transient (retried, then the file fails for this destination only); the pre-flight stops
  the run for a refused login or an unknown database, and only warns for a database that
  does not answer (a fan-out run still lands its files elsewhere; the re-run loads them).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Hashable, Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    NoSuchModuleError,
    OperationalError,
    ProgrammingError,
    SQLAlchemyError,
)

from common.exceptions import TransientUploadError, UploadError
from common.interfaces.destination import (
    ColumnType,
    DestinationSetup,
    DestinationUnusable,
    LandingFile,
    LoadOutcome,
    RecordDestination,
    RecordsRefused,
    RecordTarget,
)
from common.problems import Problem
from common.records import FileRecords, is_compressed, read_records
from common.retry import RetryPolicy
from common.secret import reveal

__all__ = ["LOAD_LOG", "SqlDestination"]

log = structlog.get_logger(__name__)

#: The table that records every file loaded, per target table.
LOAD_LOG = "_module_system_loads"
_CHUNK = 1 << 20
#: Words of a connection error that mean "the database does not answer" (transient), not "it refuses us".
_UNREACHABLE = ("connection refused", "could not connect", "timeout", "timed out", "no route to host",
                "connection reset", "server closed the connection", "network is unreachable", "could not receive")

_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "minLength": 1, "x-secret": True,
                "description": "SQLAlchemy URL: `sqlite:///file.db` (relative to the working directory) or "
                               "`postgresql://user:password@host:port/db`; a secret (never shown with its password)."},
        "table": {"type": "string", "minLength": 1, "default": "{service_id}",
                  "description": "Target table; {service_id}, {job_id}, {run_id} substituted. Created when missing."},
        "mode": {"enum": ["append", "replace", "merge"], "default": "append",
                 "description": "append adds rows; replace: the run's first load deletes the table's rows (in its "
                                "transaction); merge upserts on primary_key."},
        "primary_key": {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1,
                        "uniqueItems": True,
                        "description": "Columns of the primary key of a table this destination creates; required by "
                                       "mode merge."},
        "schema_evolution": {"enum": ["reject", "add_columns"], "default": "reject",
                             "description": "A file with a column the table lacks: reject the file, or add the column "
                                            "(nullable)."},
        "records_path": {"type": "string", "minLength": 1,
                         "description": "Dotted path to the array of records inside a .json document (`data.items`)."},
        "batch_rows": {"type": "integer", "minimum": 1, "default": 5000,
                       "description": "Rows per executemany batch (SQLite; and JSON records to other databases)."},
    },
    "if": {"properties": {"mode": {"const": "merge"}}, "required": ["mode"]},
    "then": {"required": ["primary_key"]},
}


class SqlDestination(RecordDestination):
    config_schema = _SCHEMA
    default_name = "sql"

    def __init__(self, config: Mapping[str, Any], setup: DestinationSetup) -> None:
        super().__init__(config, setup)
        self.table_template: str = config["table"]
        self.mode: str = config["mode"]
        self.primary_key: tuple[str, ...] = tuple(config.get("primary_key") or ())
        self.evolution: str = config["schema_evolution"]
        self.records_path: str | None = config.get("records_path")
        self.batch_rows: int = config["batch_rows"]
        self.url: sa.engine.URL | None
        try:
            self.url = sa.engine.make_url(_with_driver(reveal(config["url"])))
        except ArgumentError:
            self.url = None
        self._engine: Engine | None = None
        self._tables: dict[str, sa.Table] = {}
        self._tables_lock = threading.Lock()
        self._replaced: set[str] = set()
        self._replace_locks: dict[str, threading.Lock] = {}
        self._log_ready = False

    @classmethod
    def share_key(cls, config: Mapping[str, Any]) -> Hashable:
        return (cls, reveal(config["url"]), config["table"], config["mode"], tuple(config.get("primary_key") or ()),
                config["schema_evolution"], config.get("records_path"), config["batch_rows"])

    def describe(self) -> str:
        if self.url is None:
            return "an unreadable SQLAlchemy URL"
        return self.url.render_as_string(hide_password=True)

    # ------------------------------------------------------------------ the interface

    def check(self, retry: RetryPolicy) -> None:
        if self.url is None:
            raise DestinationUnusable("the url is not a SQLAlchemy URL (dialect+driver://user:password@host/db)")
        try:
            if self.mode == "merge" and self.url.get_backend_name() not in ("sqlite", "postgresql"):
                raise DestinationUnusable(f"mode merge needs SQLite or PostgreSQL, not {self.url.get_backend_name()}")
            engine = self.engine()
            with engine.begin() as conn:
                _load_log(conn)
        except DestinationUnusable:
            raise
        except (OperationalError, InterfaceError) as exc:
            reason = _reason(exc)
            if self.url.get_backend_name() != "sqlite" and any(w in reason.lower() for w in _UNREACHABLE):
                log.warning("destination_unreachable", destination=self.describe(), reason=reason,
                            hint="files fail for this destination; a re-run loads them")
                return
            raise DestinationUnusable(reason) from None
        except SQLAlchemyError as exc:
            raise DestinationUnusable(_reason(exc)) from None

    def load(self, file: LandingFile, target: RecordTarget, retry: RetryPolicy) -> LoadOutcome:
        if self.url is None:
            raise UploadError("the url is not a SQLAlchemy URL")
        table = self.table_template.format(**target.names())
        outcome: LoadOutcome = retry.call(self._load_once, file, target, table, what=f"load of {file.name} into {table}")
        return outcome

    def close(self) -> None:
        self._engine = None  # the engine is the run's (setup.shared): disposed below, once

        with self.setup.lock:
            engines = [v for k, v in self.setup.shared.items() if isinstance(k, tuple) and k[:1] == ("sql-engine",)]
            for key in [k for k in self.setup.shared if isinstance(k, tuple) and k[:1] == ("sql-engine",)]:
                del self.setup.shared[key]
        for engine in engines:
            engine.dispose()

    # ------------------------------------------------------------------ engine, tables

    def engine(self) -> Engine:
        if self._engine is not None:
            return self._engine
        assert self.url is not None
        key = ("sql-engine", self.url.render_as_string(hide_password=False))
        with self.setup.lock:
            engine = self.setup.shared.get(key)
            if engine is None:
                engine = self.setup.shared[key] = _new_engine(self.url, self.setup)
        self._engine = engine
        return engine

    def _write_lock(self) -> threading.Lock | None:
        """SQLite has one writer per database file: loads into it take turns."""
        assert self.url is not None
        if self.url.get_backend_name() != "sqlite":
            return None
        key = ("sql-sqlite-writer", self.url.database)
        with self.setup.lock:
            lock = self.setup.shared.get(key)
            if lock is None:
                lock = self.setup.shared[key] = threading.Lock()
        return lock  # type: ignore[no-any-return]

    def _table(self, name: str, records: FileRecords, target: RecordTarget) -> sa.Table:
        """The table ``name``: reflected, or created (in a transaction of its own, one creator at a
        time) from the declared and the file's columns. Known to every later load of the run."""
        with self._tables_lock:
            table = self._tables.get(name)
            if table is not None:
                return table
            with self.engine().begin() as conn:
                if not sa.inspect(conn).has_table(name):
                    self._create(conn, name, records, target)
                table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            self._tables[name] = table
            return table

    def _create(self, conn: Connection, name: str, records: FileRecords, target: RecordTarget) -> None:
        declared = {c.name: c for c in target.columns}
        columns = []
        for column in [*declared, *(c for c in records.columns if c not in declared)]:
            kind = records.types.get(column) or declared[column].type
            required = column in self.primary_key or (column in declared and declared[column].required)
            columns.append(sa.Column(column, _sql_type(kind, conn), nullable=not required))
        missing = [k for k in self.primary_key if k not in {c.name for c in columns}]
        if missing:
            raise RecordsRefused(f"primary_key column {missing[0]!r} is in neither the validate section nor the file")
        constraint = [sa.PrimaryKeyConstraint(*self.primary_key)] if self.primary_key else []
        sa.Table(name, sa.MetaData(), *columns, *constraint).create(conn, checkfirst=True)
        log.info("table_created", table=name, columns=[c.name for c in columns], primary_key=list(self.primary_key))

    def _forget_table(self, name: str) -> None:
        with self._tables_lock:
            self._tables.pop(name, None)

    # ------------------------------------------------------------------ one load

    def _load_once(self, file: LandingFile, target: RecordTarget, name: str) -> LoadOutcome:
        records = read_records(file.path, file.name, target, self.records_path)
        scope = target.run_id if self.mode == "replace" else ""
        writer = self._write_lock()
        try:
            if writer is not None:
                writer.acquire()
            try:
                self._table(name, records, target)
                return self._transaction(file, target, name, records, scope)
            finally:
                if writer is not None:
                    writer.release()
        except RecordsRefused:
            raise
        except IntegrityError as exc:
            if self._logged(name, file.sha256, scope):  # another load of this very file committed first
                return LoadOutcome("skipped_same")
            self._forget_table(name)
            raise RecordsRefused(f"the table refused the rows: {_reason(exc)}") from None
        except (DataError, ProgrammingError) as exc:
            self._forget_table(name)
            raise RecordsRefused(f"the table refused the rows: {_reason(exc)}") from None
        except (OperationalError, InterfaceError) as exc:
            self._forget_table(name)
            raise TransientUploadError(f"load into {name} at {self.describe()} failed: {_reason(exc)}") from None
        except DBAPIError as exc:
            self._forget_table(name)
            if exc.connection_invalidated:
                raise TransientUploadError(f"load into {name} at {self.describe()} failed: {_reason(exc)}") from None
            raise UploadError(f"load into {name} at {self.describe()} failed: {_reason(exc)}") from None
        except SQLAlchemyError as exc:
            self._forget_table(name)
            raise UploadError(f"load into {name} at {self.describe()} failed: {_reason(exc)}") from None

    def _transaction(self, file: LandingFile, target: RecordTarget, name: str, records: FileRecords,
                     scope: str) -> LoadOutcome:
        replace_lock = self._replace_lock(name) if self.mode == "replace" else None
        if replace_lock is not None:
            replace_lock.acquire()
            if name in self._replaced:  # the run's first load into it is done: append
                replace_lock.release()
                replace_lock = None
        try:
            with self.engine().begin() as conn:
                loads = self._load_log(conn)
                done = conn.execute(sa.select(loads.c.rows).where(
                    loads.c.table_name == name, loads.c.sha256 == file.sha256, loads.c.scope == scope)).first()
                if done is not None:
                    return LoadOutcome("skipped_same")
                table = self._evolve(conn, self._table(name, records, target), records)
                if replace_lock is not None:
                    conn.execute(table.delete())
                rows = self._insert(conn, table, file, target, records)
                conn.execute(loads.insert().values(
                    table_name=name, sha256=file.sha256, scope=scope, source_uri=file.source_uri,
                    job_id=target.job_id, run_id=target.run_id, rows=rows, loaded_at=dt.datetime.now(dt.timezone.utc)))
            if replace_lock is not None:
                self._replaced.add(name)
            log.debug("records_loaded", table=name, rows=rows, uri=file.source_uri)
            return LoadOutcome("uploaded", rows)
        finally:
            if replace_lock is not None:
                replace_lock.release()

    def _load_log(self, conn: Connection) -> sa.Table:
        if self._log_ready:
            return _load_log_table()
        table = _load_log(conn)
        self._log_ready = True
        return table

    def _replace_lock(self, name: str) -> threading.Lock:
        with self._tables_lock:
            return self._replace_locks.setdefault(name, threading.Lock())

    def _logged(self, name: str, sha256: str, scope: str) -> bool:
        try:
            with self.engine().connect() as conn:
                loads = _load_log_table()
                return conn.execute(sa.select(loads.c.rows).where(
                    loads.c.table_name == name, loads.c.sha256 == sha256, loads.c.scope == scope)).first() is not None
        except SQLAlchemyError:
            return False

    def _evolve(self, conn: Connection, table: sa.Table, records: FileRecords) -> sa.Table:
        """The table with every column of the file: refused under ``reject``, added under ``add_columns``."""
        extra = [c for c in records.columns if c not in table.c]
        if not extra:
            return table
        if self.evolution == "reject":
            names = ", ".join(repr(c) for c in extra)
            raise RecordsRefused(
                f"column{'s' if len(extra) > 1 else ''} {names} not in table {table.name} (schema_evolution: reject)",
                tuple(Problem(f"column not in table {table.name} (schema_evolution: reject)", f"column '{c}'")
                      for c in extra))
        quote = conn.dialect.identifier_preparer.quote
        for column in extra:
            kind = _sql_type(records.types[column], conn).compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column)} {kind}"))
            log.info("column_added", table=table.name, column=column)
        self._forget_table(table.name)
        evolved = sa.Table(table.name, sa.MetaData(), autoload_with=conn)
        return evolved

    def _insert(self, conn: Connection, table: sa.Table, file: LandingFile, target: RecordTarget,
                records: FileRecords) -> int:
        merge_key = self.primary_key if self.mode == "merge" else ()
        missing = [k for k in merge_key if k not in records.columns]
        if missing:
            raise RecordsRefused(f"the records have no primary key column {missing[0]!r}")
        if conn.dialect.name == "postgresql":
            if records.kind == "csv" and "json" not in records.types.values() and not is_compressed(file.name):
                copied = _pg_copy_csv(conn, table, file, target.csv_delimiter, records.columns, merge_key)
                if copied is not None:
                    _drain(records.rows)
                    return copied
                records = read_records(file.path, file.name, target, self.records_path)  # typed, to say which row
            return _pg_copy_rows(conn, table, records, merge_key)
        return _executemany(conn, table, records, merge_key, self.batch_rows)


# ----------------------------------------------------------------------------- bulk paths


def _executemany(conn: Connection, table: sa.Table, records: FileRecords, merge_key: Sequence[str],
                 batch_rows: int) -> int:
    """INSERT (or, SQLite, upsert) the rows ``batch_rows`` at a time: SQLite through its own cursor
    (``executemany`` of one prepared statement), other databases through SQLAlchemy Core."""
    columns = records.columns
    total = 0
    if conn.dialect.name != "sqlite":
        for batch in _batches(records.rows, batch_rows):
            conn.execute(table.insert(), [dict(zip(columns, row, strict=True)) for row in batch])
            total += len(batch)
        return total
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({', '.join('?' for _ in columns)})"
    if merge_key:
        updates = [c for c in columns if c not in merge_key]
        sets = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in updates)
        sql += f" ON CONFLICT ({', '.join(quote(k) for k in merge_key)}) " + (f"DO UPDATE SET {sets}" if sets
                                                                              else "DO NOTHING")
    adapt = _sqlite_adapters(records)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        for batch in _batches(records.rows, batch_rows):
            if any(adapt):
                batch = [tuple(f(v) if f is not None and v is not None else v for f, v in zip(adapt, row, strict=True))
                         for row in batch]
            cursor.executemany(sql, batch)
            total += len(batch)
    finally:
        cursor.close()
    return total


def _sqlite_adapters(records: FileRecords) -> list[Any]:
    """Per column, how a value is stored in SQLite as SQLAlchemy stores it (dates as ISO text,
    JSON as text), so that SQLAlchemy reads the rows back as it wrote them."""
    out: list[Any] = []
    for column in records.columns:
        kind = records.types.get(column, "str")
        if kind == "date":
            out.append(lambda v: v.isoformat())
        elif kind == "datetime":
            out.append(_sqlite_datetime)
        elif kind == "json":
            out.append(lambda v: json.dumps(v, separators=(",", ":")))
        else:
            out.append(None)
    return out


def _sqlite_datetime(value: dt.datetime) -> str:
    if value.tzinfo is not None:
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _pg_copy_csv(conn: Connection, table: sa.Table, file: LandingFile, delimiter: str, columns: Sequence[str],
                 merge_key: Sequence[str]) -> int | None:
    """COPY a CSV file's bytes as they are (the service's rules checked them already); None when
    the server refuses them (the savepoint is rolled back: the rows then go typed, one by one,
    so that the problem names its row)."""
    quote = conn.dialect.identifier_preparer.quote
    pg = conn.connection.driver_connection
    import psycopg

    options = "FORMAT csv, HEADER true" + (f", DELIMITER {_pg_literal(delimiter)}" if delimiter != "," else "")
    with pg.cursor() as cursor:  # type: ignore[union-attr]
        into = _pg_merge_stage(cursor, quote(table.name)) if merge_key else quote(table.name)
        cursor.execute("SAVEPOINT _ms_raw_copy")
        try:
            with cursor.copy(f"COPY {into} ({', '.join(quote(c) for c in columns)}) FROM STDIN WITH ({options})") as copy:
                for chunk in _file_chunks(file):
                    copy.write(chunk)
            count = cursor.rowcount
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
            cursor.execute("ROLLBACK TO SAVEPOINT _ms_raw_copy")
            log.debug("raw_copy_refused", table=table.name, reason=str(exc).splitlines()[0][:200])
            if merge_key:
                cursor.execute("DROP TABLE _ms_merge")
            return None
        cursor.execute("RELEASE SAVEPOINT _ms_raw_copy")
        if merge_key:
            _pg_upsert(cursor, quote, quote(table.name), columns, merge_key)
    return int(count)


def _pg_copy_rows(conn: Connection, table: sa.Table, records: FileRecords, merge_key: Sequence[str]) -> int:
    """COPY typed rows (JSON records, or a CSV file the server refused as it was)."""
    from psycopg.types.json import Jsonb

    quote = conn.dialect.identifier_preparer.quote
    pg = conn.connection.driver_connection
    columns = records.columns
    json_at = {i for i, c in enumerate(columns) if records.types.get(c) == "json"}
    count = 0
    with pg.cursor() as cursor:  # type: ignore[union-attr]
        into = _pg_merge_stage(cursor, quote(table.name)) if merge_key else quote(table.name)
        with cursor.copy(f"COPY {into} ({', '.join(quote(c) for c in columns)}) FROM STDIN") as copy:
            for row in records.rows:
                if json_at:
                    row = tuple(Jsonb(v) if i in json_at and v is not None else v for i, v in enumerate(row))
                copy.write_row(row)
                count += 1
        if merge_key:
            _pg_upsert(cursor, quote, quote(table.name), columns, merge_key)
    return count


def _pg_merge_stage(cursor: Any, table: str) -> str:
    """A temp table shaped like ``table`` (plus the row's order), dropped at commit."""
    cursor.execute(f"CREATE TEMP TABLE _ms_merge (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
    cursor.execute("ALTER TABLE _ms_merge ADD COLUMN _ms_row bigserial")
    return "_ms_merge"


def _pg_upsert(cursor: Any, quote: Any, table: str, columns: Sequence[str], merge_key: Sequence[str]) -> None:
    """From the temp table into ``table``: the last row of each key, inserted or updated."""
    names = ", ".join(quote(c) for c in columns)
    keys = ", ".join(quote(k) for k in merge_key)
    sets = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in columns if c not in merge_key)
    cursor.execute(f"INSERT INTO {table} ({names}) SELECT DISTINCT ON ({keys}) {names} FROM _ms_merge "
                   f"ORDER BY {keys}, _ms_row DESC ON CONFLICT ({keys}) "
                   + (f"DO UPDATE SET {sets}" if sets else "DO NOTHING"))


def _pg_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _file_chunks(file: LandingFile) -> Iterator[bytes]:
    with open(file.path, "rb") as fh:
        first = True
        while chunk := fh.read(_CHUNK):
            if first:
                chunk = chunk.removeprefix(b"\xef\xbb\xbf")
                first = False
            yield chunk


def _drain(rows: Iterator[Any]) -> None:
    """Close a rows generator not consumed (its file)."""
    close = getattr(rows, "close", None)
    if close is not None:
        close()


def _batches(rows: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ----------------------------------------------------------------------------- helpers


def _with_driver(url: str) -> str:
    """``postgresql://`` (and ``postgres://``) without a driver means psycopg 3, the one installed."""
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg://" + url[len(bare):]
    return url


def _new_engine(url: sa.engine.URL, setup: DestinationSetup) -> Engine:
    try:
        if url.get_backend_name() == "sqlite":
            engine = sa.create_engine(url, connect_args={"timeout": max(setup.timeout_s, 30)})

            @sa.event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

            return engine
        connect_args = {"connect_timeout": max(1, int(setup.timeout_s))} if url.get_backend_name() == "postgresql" else {}
        return sa.create_engine(url, pool_size=max(1, min(setup.workers, 32)), max_overflow=4, pool_pre_ping=True,
                                connect_args=connect_args)
    except (NoSuchModuleError, ImportError) as exc:
        raise DestinationUnusable(f"no SQLAlchemy driver for {url.drivername}: {exc}") from None
    except ArgumentError as exc:
        raise DestinationUnusable(f"the url is not usable: {exc}") from None


def _load_log_table(metadata: sa.MetaData | None = None) -> sa.Table:
    return sa.Table(
        LOAD_LOG, metadata or sa.MetaData(),
        sa.Column("table_name", sa.String(255), primary_key=True),
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("scope", sa.String(64), primary_key=True),
        sa.Column("source_uri", sa.Text, nullable=False),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
    )


def _load_log(conn: Connection) -> sa.Table:
    """The load log table, created when missing (a race with another creator is harmless)."""
    table = _load_log_table()
    try:
        with conn.begin_nested():
            table.create(conn, checkfirst=True)
    except (IntegrityError, ProgrammingError):  # created meanwhile by another connection
        pass
    return table


def _sql_type(kind: ColumnType, conn: Connection) -> Any:
    postgres = conn.dialect.name == "postgresql"
    if kind == "int":
        return sa.BigInteger()
    if kind == "float":
        return sa.Double()
    if kind == "date":
        return sa.Date()
    if kind == "datetime":
        return sa.DateTime(timezone=True)
    if kind == "bool":
        return sa.Boolean()
    if kind == "json":
        if postgres:
            from sqlalchemy.dialects.postgresql import JSONB

            return JSONB()
        return sa.JSON()
    return sa.Text()


def _reason(exc: BaseException) -> str:
    """The driver's message in one line, without the statement, parameters or a password."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first[:300]
