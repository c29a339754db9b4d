"""ingest_retries: series events whose series answered 404, retried before "gone".

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ingest_retries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("event_date", sa.Text(), nullable=False),
        sa.Column("remote_id", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingest_retries")),
        sa.UniqueConstraint("source", "event_id", name=op.f("uq_ingest_retries_source_event_id")),
    )
    op.create_index(
        op.f("ix_ingest_retries_status_next_at"), "ingest_retries", ["status", "next_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_ingest_retries_status_next_at"), table_name="ingest_retries")
    op.drop_table("ingest_retries")
