"""Alembic environment of the history store: always run by :func:`orchestrator.history.store.upgrade`
with an open connection (``config.attributes["connection"]``); there is no ``alembic.ini``.

To write a new revision by hand: copy ``versions/0001_history.py``, set ``down_revision`` to
the last one, and change :mod:`orchestrator.history.models` to match (a test compares them).
"""

from __future__ import annotations

from alembic import context

from orchestrator.history.models import METADATA

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable from a hand-made alembic.ini
    raise RuntimeError("the history migrations run through orchestrator.history.store.upgrade()")

context.configure(connection=connection, target_metadata=METADATA, version_table="ms_alembic_version",
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
