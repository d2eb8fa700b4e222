"""Fixtures of the history tests: a history database URL, SQLite or a real PostgreSQL."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import sqlalchemy as sa

_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def history_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty history database: a SQLite file, or a new database of the session's cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite3'}"
    server: str = request.getfixturevalue("postgres_url")
    name = f"history_{next(_databases)}"
    engine = sa.create_engine(server.replace("postgresql://", "postgresql+psycopg://", 1),
                              isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server.rsplit("/", 1)[0] + "/" + name
