"""executor_jobs, executor_workers: executor runs sent to `patchci worker` hosts through
a broker, each start recorded, and the workers seen by their heartbeats.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "executor_jobs",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("enqueued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deadline", sa.Float(), nullable=False),
        sa.Column("worker", sa.Text(), nullable=False, server_default=""),
        sa.Column("attempts", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("requeues", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("uploaded_bytes", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("collected", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("sent", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_executor_jobs")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], ondelete="CASCADE",
            name=op.f("fk_executor_jobs_run_id_runs"),
        ),  # fmt: skip
    )
    op.create_index(op.f("ix_executor_jobs_state"), "executor_jobs", ["state"], unique=False)
    op.create_index(op.f("ix_executor_jobs_run_id"), "executor_jobs", ["run_id"], unique=False)
    op.create_table(
        "executor_workers",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("queues", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("job_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_executor_workers")),
    )


def downgrade() -> None:
    op.drop_table("executor_workers")
    op.drop_index(op.f("ix_executor_jobs_run_id"), table_name="executor_jobs")
    op.drop_index(op.f("ix_executor_jobs_state"), table_name="executor_jobs")
    op.drop_table("executor_jobs")
