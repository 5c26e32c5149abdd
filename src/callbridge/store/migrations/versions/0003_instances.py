"""Which instance holds each carrier stream, and a heartbeat per instance.

A stream is a socket on one instance; when that instance dies its streams die with it, and the
store must say so. `calls.stream_instance` names the instance holding the call's stream (or
that lost it with itself), and `callbridge_instances` keeps each instance's state and the last
time it was seen, so that a restarted instance finds the streams it held, and a live one the
streams of an instance that stopped sending heartbeats.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("stream_instance", sa.String(128)))
        batch.create_index("ix_calls_stream_instance", ["stream_instance"])
    op.create_table(
        "callbridge_instances",
        sa.Column("instance_id", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("callbridge_instances")
    with op.batch_alter_table("calls") as batch:
        batch.drop_index("ix_calls_stream_instance")
        batch.drop_column("stream_instance")
