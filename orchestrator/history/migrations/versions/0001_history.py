"""The history tables: ms_runs, ms_jobs, ms_files, ms_events.

Revision ID: 0001
Revises:
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "ms_runs",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("started_at", _WHEN, nullable=False),
        sa.Column("finished_at", _WHEN, nullable=True),
        sa.Column("batch_file", sa.Text, nullable=False),
        sa.Column("registry_file", sa.Text, nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("log_dir", sa.Text, nullable=False),
        sa.Column("max_workers", sa.Integer, nullable=False),
        sa.Column("jobs_total", sa.Integer, nullable=False),
        sa.Column("stop_reason", sa.String(16), nullable=True),
        sa.Column("totals", sa.JSON, nullable=True),
        sa.Column("failed_jobs_file", sa.Text, nullable=True),
        sa.Column("report_file", sa.Text, nullable=True),
    )
    op.create_index("ix_ms_runs_started_at", "ms_runs", ["started_at"])
    op.create_index("ix_ms_runs_status", "ms_runs", ["status"])
    op.create_table(
        "ms_jobs",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("ms_runs.run_id", ondelete="CASCADE"), nullable=False),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("service_id", sa.String(255), nullable=False),
        sa.Column("module", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("source_used", sa.String(32), nullable=True),
        sa.Column("files", sa.JSON, nullable=True),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("seconds", sa.Float, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("started_at", _WHEN, nullable=True),
        sa.Column("finished_at", _WHEN, nullable=True),
        sa.Column("log_file", sa.Text, nullable=True),
        sa.UniqueConstraint("run_id", "job_id", name="uq_ms_jobs_run_job"),
    )
    op.create_index("ix_ms_jobs_status", "ms_jobs", ["status"])
    op.create_table(
        "ms_files",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("ms_runs.run_id", ondelete="CASCADE"), nullable=False),
        sa.Column("job_id", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("source_uri", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=True),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("seconds", sa.Float, nullable=True),
        sa.Column("finished_at", _WHEN, nullable=False),
        sa.Column("problems", sa.JSON, nullable=True),
        sa.Column("unchecked", sa.Boolean, nullable=False),
        sa.Column("destinations", sa.JSON, nullable=True),
    )
    op.create_index("ix_ms_files_run_job", "ms_files", ["run_id", "job_id"])
    op.create_index("ix_ms_files_run_status", "ms_files", ["run_id", "status"])
    op.create_table(
        "ms_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("ms_runs.run_id", ondelete="CASCADE"), nullable=False),
        sa.Column("job_id", sa.String(255), nullable=True),
        sa.Column("at", _WHEN, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("fields", sa.JSON, nullable=True),
    )
    op.create_index("ix_ms_events_run_job", "ms_events", ["run_id", "job_id"])
    op.create_index("ix_ms_events_kind", "ms_events", ["kind"])


def downgrade() -> None:
    op.drop_table("ms_events")
    op.drop_table("ms_files")
    op.drop_table("ms_jobs")
    op.drop_table("ms_runs")
