"""Alembic environment: callbridge runs migrations itself, on the connection it hands over."""

from __future__ import annotations

from alembic import context

from callbridge.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - callbridge always passes a connection
    raise RuntimeError("run migrations with `callbridge migrate` or by starting the service")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
