"""Where the history lives: the database URL, the engine, and the schema brought up to date.

``run``, ``history`` and ``show`` read ``--history-db URL`` (``$MODULE_SYSTEM_HISTORY_DB``):
any SQLAlchemy URL (``postgresql://user:pw@host/db`` means psycopg 3, the driver installed);
without it, the embedded SQLite database ``<state-dir>/history.sqlite3``. The URL is a secret:
only its password-free form (:func:`shown`) is ever printed or logged.

:meth:`HistoryStore.open` upgrades the schema to the newest Alembic revision
(``orchestrator/history/migrations``; a new, empty database is created from the models and
stamped with it), under a lock so that two runs starting at once do not
both migrate: a lock file beside a SQLite database, an advisory lock on PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from common.exceptions import ConfigError
from common.file_lock import FileLock
from common.secret import Secret
from orchestrator.history import DEFAULT_FILE, HEAD

__all__ = ["HEAD", "HistoryStore", "HistoryUnavailable", "history_url", "shown"]

_MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK_ID = 0x6D735F68  # "ms_h": the advisory lock of the history migrations

logging.getLogger("alembic").setLevel(logging.WARNING)  # "Context impl SQLiteImpl." on every open


class HistoryUnavailable(Exception):
    """The history database cannot be opened or written (down, locked, refused, full)."""


def history_url(value: str | None, state_dir: Path = Path(".")) -> URL:
    """The URL of ``--history-db`` (``value``), else the state dir's SQLite file; ConfigError when
    ``value`` is not a URL SQLAlchemy can use (no driver installed, not a URL). Connects to nothing."""
    if not value:
        return URL.create("sqlite", database=str((state_dir / DEFAULT_FILE).resolve()))
    text = value.strip()
    for bare in ("postgresql://", "postgres://"):
        if text.startswith(bare):
            text = "postgresql+psycopg://" + text[len(bare):]
    try:
        url = sa.engine.make_url(text)
        url.get_dialect()
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if isinstance(exc, (NoSuchModuleError, ImportError)) else "not a database URL"
        raise ConfigError(f"--history-db: {reason} (expected e.g. sqlite:///path/history.sqlite3 or "
                          "postgresql://user@host/db)") from None
    if url.password:
        Secret(str(url.password))  # known from now on: scrubbed from every log record
    return url


def shown(url: URL) -> str:
    """The URL as it may be printed: without its password."""
    return url.render_as_string(hide_password=True)


class HistoryStore:
    """An engine on the history database with its schema at the newest revision."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.url: URL = engine.url

    @classmethod
    def open(cls, url: URL, timeout_s: float = 5.0, create: bool = True) -> HistoryStore:
        """Connect and upgrade the schema; HistoryUnavailable if the database does not answer,
        refuses or stays locked ``timeout_s`` seconds. ``create`` False: a SQLite file that does
        not exist yet is HistoryUnavailable rather than created (the read commands)."""
        database = url.database if url.get_backend_name() == "sqlite" else None
        if database and database != ":memory:":
            path = Path(database)
            if not create and not path.exists():
                raise HistoryUnavailable(f"no history database at {path}")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise HistoryUnavailable(f"cannot create {path.parent}: {exc.strerror or exc}") from None
        engine = _engine(url, timeout_s)
        store = cls(engine)
        try:
            store._upgrade(timeout_s)
        except HistoryUnavailable:
            engine.dispose()
            raise
        except sa.exc.SQLAlchemyError as exc:
            engine.dispose()
            raise HistoryUnavailable(describe_error(exc)) from None
        return store

    def close(self) -> None:
        self.engine.dispose()

    def _upgrade(self, timeout_s: float) -> None:
        if self._current():
            return
        if self.url.get_backend_name() == "sqlite" and self.url.database not in (None, "", ":memory:"):
            lock = FileLock(Path(str(self.url.database) + ".migrate.lock"))
            gave_up = threading.Event()
            timer = threading.Timer(timeout_s, gave_up.set)
            timer.start()
            try:
                if not lock.acquire(gave_up):
                    raise HistoryUnavailable("another process holds the history migration lock")
            finally:
                timer.cancel()
            try:
                with self.engine.begin() as conn:
                    _create_or_upgrade(conn)
            finally:
                lock.release()
            return
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
            _create_or_upgrade(conn)


    def _current(self) -> bool:
        """True when the schema is at :data:`HEAD` already (the common case: one query)."""
        with self.engine.connect() as conn:
            if not sa.inspect(conn).has_table("ms_alembic_version"):
                return False
            return conn.execute(sa.text("SELECT version_num FROM ms_alembic_version")).scalar() == HEAD


def _create_or_upgrade(conn: sa.Connection) -> None:
    """An empty database gets the models' tables stamped :data:`HEAD` (what the migrations build:
    a test compares both), without importing Alembic, which costs a new run more than its jobs'
    start; a database with tables is upgraded by Alembic."""
    if sa.inspect(conn).get_table_names():
        _upgrade(conn)
        return
    from orchestrator.history.models import METADATA

    METADATA.create_all(conn)
    version = sa.Table("ms_alembic_version", sa.MetaData(), sa.Column("version_num", sa.String(32), nullable=False),
                       sa.PrimaryKeyConstraint("version_num", name="ms_alembic_version_pkc"))
    version.create(conn)
    conn.execute(version.insert(), {"version_num": HEAD})


def _upgrade(conn: sa.Connection) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = conn
    command.upgrade(config, "head")


def _engine(url: URL, timeout_s: float) -> Engine:
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(url, connect_args={"timeout": timeout_s, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # readers (history, serve) never block the writer
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = max(1, int(timeout_s))
    return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2, connect_args=connect_args)


def describe_error(exc: BaseException) -> str:
    """One line saying why the database failed, without the statement, parameters or password."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    from common.secret import redact

    return redact(f"{type(orig).__name__}: {text}")[:300]
