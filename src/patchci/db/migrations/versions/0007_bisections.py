"""bisections: one culprit search per regressed test of a branch, its probes kept so a
killed search goes on where it stopped.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bisections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("branch_id", sa.Integer(), nullable=False),
        sa.Column("executor", sa.Text(), nullable=False),
        sa.Column("grp", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("culprit_series_id", sa.Integer(), nullable=True),
        sa.Column("steps", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("worker", sa.Text(), nullable=False, server_default=""),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bisections")),
        sa.ForeignKeyConstraint(
            ["branch_id"],
            ["branches.id"],
            ondelete="CASCADE",
            name=op.f("fk_bisections_branch_id_branches"),
        ),  # fmt: skip
        sa.UniqueConstraint(
            "branch_id",
            "executor",
            "grp",
            "name",
            name=op.f("uq_bisections_branch_id_executor_grp_name"),
        ),  # fmt: skip
    )
    op.create_index(op.f("ix_bisections_status"), "bisections", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_bisections_status"), table_name="bisections")
    op.drop_table("bisections")
