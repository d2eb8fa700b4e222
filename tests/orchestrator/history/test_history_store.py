"""The history store: its migrations build exactly the tables of models.py; a database that is
locked or unreachable is one warning, never a failed run."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from common.exceptions import ConfigError
from common.secret import known_secrets
from orchestrator.cli_init import run_batch
from orchestrator.exit_codes import ExitCode
from orchestrator.history import (
    HistoryReader,
    HistoryStore,
    HistoryUnavailable,
    history_url,
    shown,
)
from orchestrator.history.models import METADATA
from orchestrator.history.store import HEAD
from orchestrator.history.store import _upgrade as upgrade_with_alembic


def _alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parents[3] / "orchestrator/history/migrations"))
    return config


def test_the_migrations_build_the_tables_of_the_models(history_db: str, tmp_path: Path) -> None:
    """A new database is created from the models and stamped HEAD; Alembic's migrations build the
    same tables (an empty database upgraded by Alembic itself is compared too)."""
    url = history_url(history_db, tmp_path)
    store = HistoryStore.open(url)
    HistoryStore.open(url).close()  # a second open finds the schema current and changes nothing
    try:
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": "ms_alembic_version"})
            assert compare_metadata(context, METADATA) == []
            version = conn.exec_driver_sql("SELECT version_num FROM ms_alembic_version").scalar()
            created = _schema(conn)
        assert version == HEAD
        with store.engine.begin() as conn:
            for table in ("ms_events", "ms_files", "ms_jobs", "ms_runs", "ms_alembic_version"):
                conn.exec_driver_sql(f"DROP TABLE {table}")
        with store.engine.begin() as conn:
            upgrade_with_alembic(conn)
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"version_table": "ms_alembic_version"})
            assert compare_metadata(context, METADATA) == []
            assert conn.exec_driver_sql("SELECT version_num FROM ms_alembic_version").scalar() == HEAD
            assert _schema(conn) == created
    finally:
        store.close()
    script = ScriptDirectory.from_config(_alembic_config())
    assert script.get_current_head() == HEAD  # a new revision moves HEAD with it


def _schema(conn: Any) -> dict[str, Any]:
    """Tables with their columns (name, type, nullable, default), keys, indexes and constraints."""
    inspector = sa.inspect(conn)
    return {table: {
        "columns": [(c["name"], str(c["type"]), c["nullable"], c.get("default")) for c in inspector.get_columns(table)],
        "pk": inspector.get_pk_constraint(table)["constrained_columns"],
        "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"], str(f.get("options")))
                      for f in inspector.get_foreign_keys(table)),
        "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(table)),
        "unique": sorted(tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)),
    } for table in sorted(inspector.get_table_names())}


def test_a_history_url_is_checked_without_connecting_and_never_shown_with_its_password(tmp_path: Path) -> None:
    url = history_url("postgresql://ops:s3cret-pw-77@db.example:5432/runs", tmp_path)
    assert url.drivername == "postgresql+psycopg" and "s3cret-pw-77" not in shown(url)
    assert "s3cret-pw-77" in known_secrets()  # scrubbed from any log record that would quote it
    assert history_url(None, tmp_path).database == str((tmp_path / "history.sqlite3").resolve())
    with pytest.raises(ConfigError, match="--history-db"):
        history_url("nosuchdialect://x/y", tmp_path)
    with pytest.raises(ConfigError, match="--history-db"):
        history_url("not a url", tmp_path)
    with pytest.raises(HistoryUnavailable, match="no history database"):
        HistoryStore.open(history_url(None, tmp_path / "empty"), create=False)


def _local_project(root: Path) -> tuple[Path, Path]:
    drop = root / "drop"
    drop.mkdir()
    for index in range(3):
        (drop / f"f{index}.json").write_text('{"n": 1}')
        os.utime(drop / f"f{index}.json", (1_000_000_000, 1_000_000_000))
    (root / "schema.json").write_text('{"type": "object"}')
    registry = {"version": 1, "services": {"drop": {
        "type": "local", "source": {"path": str(drop)}, "validate": {"json_schema": "schema.json"},
        "destination": {"type": "local", "path": str(root / "landing")}}}}
    (root / "registry.yaml").write_text(json.dumps(registry))
    (root / "batch.json").write_text(json.dumps({"jobs": [{"job_id": "j1", "service_id": "drop"}]}))
    return root / "registry.yaml", root / "batch.json"


def test_a_locked_history_database_is_one_warning_and_the_run_succeeds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry, batch = _local_project(tmp_path)
    state = tmp_path / "state"
    HistoryStore.open(history_url(None, state)).close()
    holder = sqlite3.connect(state / "history.sqlite3", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writing, for longer than the run lasts
    try:
        code = run_batch(batch, registry, log_format="json", state_dir=state, report=tmp_path / "report.json")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    assert code == ExitCode.OK
    assert err.count('"history_unavailable"') == 1, err[-3000:]
    assert "locked" in err
    assert json.loads((tmp_path / "report.json").read_text())["totals"]["files"]["uploaded"] == 3


def test_an_unreachable_history_database_is_one_warning_without_its_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    registry, batch = _local_project(tmp_path)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    password = "hist-pw-5f0e2c9a"
    code = run_batch(batch, registry, log_format="json", state_dir=tmp_path / "state",
                     history_db=f"postgresql://ops:{password}@127.0.0.1:{port}/history")
    err = capsys.readouterr().err
    assert code == ExitCode.OK
    assert err.count('"history_unavailable"') == 1, err[-3000:]
    assert password not in err and f"127.0.0.1:{port}" in err


def test_a_run_with_history_off_records_nothing(tmp_path: Path) -> None:
    registry, batch = _local_project(tmp_path)
    assert run_batch(batch, registry, log_format="json", state_dir=tmp_path / "state", history=False) == ExitCode.OK
    assert not (tmp_path / "state" / "history.sqlite3").exists()
    assert run_batch(batch, registry, log_format="json", state_dir=tmp_path / "state") == ExitCode.OK
    store = HistoryStore.open(history_url(None, tmp_path / "state"), create=False)
    try:
        assert HistoryReader(store).list_runs().total == 1
    finally:
        store.close()


def test_a_run_in_progress_reads_with_live_counts(history_db: str, tmp_path: Path) -> None:
    """What a run killed mid-way (or still going) leaves: ``running``, no totals, counts from its rows."""
    import datetime as dt

    from common.host_limiter import HostLimiters
    from common.manifest import ManifestEntry
    from orchestrator.history import HistoryRecorder
    from orchestrator.run_observer import PlannedJob, RunView
    from orchestrator.run_stats import RunStats

    recorder = HistoryRecorder(history_url(history_db, tmp_path))
    jobs = (PlannedJob("j1", "svc", "local", 5, 0, "j1.log"), PlannedJob("j2", "svc", "local", 5, 1, "j2.log"))
    recorder.run_started(RunView("r-live", dt.datetime.now(dt.timezone.utc), tmp_path / "b.json", tmp_path / "r.yaml",
                                 tmp_path, 2, jobs, RunStats(2), HostLimiters()))
    recorder.job_started("j1", dt.datetime.now(dt.timezone.utc))
    recorder.file_done("j1", 1, ManifestEntry("file:///a", "data/a", 10, "0" * 64, "uploaded"), 0.5)
    recorder.file_done("j1", 1, ManifestEntry("file:///b", None, 0, "", "failed"), None)
    assert recorder.close()
    store = HistoryStore.open(history_url(history_db, tmp_path), create=False)
    try:
        reader = HistoryReader(store)
        run = reader.list_runs().items[0]
        assert (run.status, run.exit_code, run.retries, run.finished_at) == ("running", None, None, None)
        assert run.jobs["running"] == 1 and run.jobs["queued"] == 1
        assert run.files["uploaded"] == 1 and run.files["failed"] == 1 and run.bytes == 10
        assert reader.stats()["runs"]["running"] == 1 and reader.stats()["bytes"] == 0  # finished runs only
        events = reader.events("r-live").items
        assert [(e.kind, e.job_id) for e in events] == [("file_failed", "j1")]
    finally:
        store.close()


def test_the_default_sqlite_history_is_written_without_sqlalchemy_exactly_as_through_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run writing into the default SQLite database at HEAD uses the standard library's sqlite3:
    every row and value is what SQLAlchemy stores (same observer calls, both databases compared)."""
    import datetime as dt

    from common.host_limiter import HostLimiters
    from common.manifest import DestinationOutcome, ManifestEntry
    from common.problems import Problem
    from orchestrator.history import HistoryRecorder, default_history_url
    from orchestrator.history import writer as history_writer
    from orchestrator.run_observer import PlannedJob, RunView
    from orchestrator.run_stats import RunStats

    fixed = dt.datetime(2026, 12, 4, 7, 5, 9, 1234, tzinfo=dt.timezone.utc)
    monkeypatch.setattr(history_writer, "_now", lambda: fixed)
    through, direct = tmp_path / "through", tmp_path / "direct"
    for folder in (through, direct):
        HistoryStore.open(history_url(None, folder)).close()  # a database at HEAD, as after a first run
    recorders = [HistoryRecorder(history_url(None, through)), HistoryRecorder(default_history_url(direct))]
    jobs = (PlannedJob("j1", "svc", "local", 5, 0, "j1.log"), PlannedJob("j2", "svc", "api", 1, 1, None))
    for recorder in recorders:
        recorder.run_started(RunView("r1", fixed, tmp_path / "b.json", tmp_path / "r.yaml", tmp_path, 2, jobs,
                                     RunStats(2), HostLimiters()))
        recorder.job_started("j1", fixed)
        recorder.file_done("j1", 1, ManifestEntry("file:///a", "data/a", 10, "0" * 64, "uploaded", (), {"etag": "x"},
                                                  True, destinations=(DestinationOutcome("s3", "uploaded", "data/a", None),
                                                                      DestinationOutcome("db", "skipped_same", None, None))),
                           0.51234)
        recorder.file_done("j1", 1, ManifestEntry("file:///b", "rejected/b", 3, "1" * 64, "rejected",
                                                  (Problem("bad", location="$.x"),)), None)
        recorder.file_done("j1", 2, ManifestEntry("file:///c", None, 0, "", "failed", (Problem("gone ü"),)), 1.0)
        recorder.event("source_fallback", "j1", "warning", "fell back", {"to": 1, "reason": "refused"})
        recorder.event("run_stopping", None, "warning", "stopping", {"reason": "deadline"})
        recorder.run_outputs(tmp_path / "failed.json", None)
        assert recorder.close()
    assert recorders[1]._fast is not None and recorders[0]._fast is None, "each took the path under test"

    def rows(folder: Path) -> dict[str, list[tuple[Any, ...]]]:
        with sqlite3.connect(folder / "history.sqlite3") as conn:
            return {table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                    for table in ("ms_runs", "ms_jobs", "ms_files", "ms_events")}

    expected, written = rows(through), rows(direct)
    assert all(expected.values()) and len(expected["ms_files"]) == 3
    assert written == expected


def test_the_direct_writer_knows_every_json_column() -> None:
    from orchestrator.history.models import METADATA
    from orchestrator.history.writer import _JSON_COLUMNS

    json_columns = {c.name for table in METADATA.tables.values() for c in table.columns if isinstance(c.type, sa.JSON)}
    assert json_columns == _JSON_COLUMNS
