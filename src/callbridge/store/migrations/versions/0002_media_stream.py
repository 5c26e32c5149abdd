"""Media stream facts on the call: which stream, its codec, and the talk-back codec.

A listener that joins mid-call learns the format of what it will hear from here, and the
carrier stream handler learns which codec Telnyx expects audio back in.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("stream_id", sa.String(128)))
        batch.add_column(sa.Column("stream_encoding", sa.String(16)))
        batch.add_column(sa.Column("stream_sample_rate", sa.Integer))
        batch.add_column(sa.Column("talk_codec", sa.String(16)))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("talk_codec")
        batch.drop_column("stream_sample_rate")
        batch.drop_column("stream_encoding")
        batch.drop_column("stream_id")
