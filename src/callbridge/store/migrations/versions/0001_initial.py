"""Initial schema: calls, the numbered event log, its counter and the store epoch.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    meta = op.create_table(
        "callbridge_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.String(256), nullable=False),
    )
    counters = op.create_table(
        "callbridge_counters",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "calls",
        sa.Column("call_control_id", sa.String(256), primary_key=True),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("stream", sa.String(16), nullable=False),
        sa.Column("call_leg_id", sa.String(256)),
        sa.Column("call_session_id", sa.String(256)),
        sa.Column("from_number", sa.String(256)),
        sa.Column("to_number", sa.String(256)),
        sa.Column("hangup_cause", sa.String(64)),
        sa.Column("hangup_source", sa.String(64)),
        sa.Column("client_state", sa.Text),
        sa.Column("stream_token_hash", sa.String(128)),
        sa.Column("stream_updated_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True)),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_calls_state", "calls", ["state"])
    op.create_index("ix_calls_created_at", "calls", ["created_at"])
    op.create_table(
        "events",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("event_id", sa.String(256), unique=True),
        sa.Column("call_control_id", sa.String(256), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
    )
    op.create_index("ix_events_call_seq", "events", ["call_control_id", "seq"])
    # The epoch names this event log: a client resuming against another database learns so.
    op.bulk_insert(meta, [{"key": "epoch", "value": uuid.uuid4().hex}])
    op.bulk_insert(counters, [{"name": "events_seq", "value": 0}])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("calls")
    op.drop_table("callbridge_counters")
    op.drop_table("callbridge_meta")
