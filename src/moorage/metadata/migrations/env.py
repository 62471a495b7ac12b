"""Alembic environment: migrations run on a connection handed in by `moorage.metadata.migrate`."""

from __future__ import annotations

from alembic import context

from moorage.metadata.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `moorage migrate` (moorage.metadata.migrate.upgrade)")
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
