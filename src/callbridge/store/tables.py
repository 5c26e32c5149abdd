"""The schema, as SQLAlchemy Core tables; migrations create exactly this."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = ["calls", "counters", "events", "instances", "meta", "metadata"]

metadata = sa.MetaData()

meta = sa.Table(
    "callbridge_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

counters = sa.Table(
    "callbridge_counters",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

calls = sa.Table(
    "calls",
    metadata,
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
    sa.Column("stream_id", sa.String(128)),
    sa.Column("stream_encoding", sa.String(16)),
    sa.Column("stream_sample_rate", sa.Integer),
    sa.Column("talk_codec", sa.String(16)),
    sa.Column("stream_instance", sa.String(128)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("answered_at", sa.DateTime(timezone=True)),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
    sa.Index("ix_calls_state", "state"),
    sa.Index("ix_calls_created_at", "created_at"),
    sa.Index("ix_calls_stream_instance", "stream_instance"),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("event_id", sa.String(256), unique=True),
    sa.Column("call_control_id", sa.String(256), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Index("ix_events_call_seq", "call_control_id", "seq"),
)

instances = sa.Table(
    "callbridge_instances",
    metadata,
    sa.Column("instance_id", sa.String(128), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
)
