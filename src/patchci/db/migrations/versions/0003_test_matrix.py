"""Flakes matrix: branches.seq and the derived test_matrix table, built from the results;
indexes for the status page (runs.status) and the contest log's subtests.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("branches", sa.Column("seq", sa.Integer(), server_default="0", nullable=False))
    op.create_table(
        "test_matrix",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("executor", sa.Text(), nullable=False),
        sa.Column("grp", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("codes", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_test_matrix")),
        sa.UniqueConstraint(
            "stream",
            "executor",
            "grp",
            "name",
            name=op.f("uq_test_matrix_stream_executor_grp_name"),
        ),  # fmt: skip
    )
    op.create_index(op.f("ix_runs_status"), "runs", ["status"], unique=False)
    op.create_index(
        "ix_subtests_test_final",
        "subtests",
        ["test_id", sa.text("coalesce(retry_outcome, outcome)")],
    )
    # Derived data: built by the code that maintains it, so the two cannot disagree.
    from patchci.db import matrix

    matrix.rebuild(op.get_bind())


def downgrade() -> None:
    op.drop_index("ix_subtests_test_final", table_name="subtests")
    op.drop_index(op.f("ix_runs_status"), table_name="runs")
    op.drop_table("test_matrix")
    op.drop_column("branches", "seq")
