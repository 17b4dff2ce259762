"""Alembic environment: always called programmatically with a connection (emr.db.upgrade)."""

from __future__ import annotations

from alembic import context

from emr.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through emr.upgrade_database(settings) or `filmless emr migrate`")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
