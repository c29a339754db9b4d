"""Contest: test branches, executor runs, per-test results, subtests and crashes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "branches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("stream", sa.Text(), nullable=False),
        sa.Column("date", sa.DateTime(timezone=True), nullable=False),
        sa.Column("base", sa.Text(), nullable=False),
        sa.Column("head", sa.Text(), nullable=False),
        sa.Column("merges", sa.Text(), nullable=False),
        sa.Column("new_changes", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_branches")),
        sa.UniqueConstraint("name", name=op.f("uq_branches_name")),
    )
    op.create_index(op.f("ix_branches_stream_date"), "branches", ["stream", "date"], unique=False)
    op.create_table(
        "branch_series",
        sa.Column("branch_id", sa.Integer(), nullable=False),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("included", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["branch_id"],
            ["branches.id"],
            name=op.f("fk_branch_series_branch_id_branches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("branch_id", "series_id", name=op.f("pk_branch_series")),
    )
    op.create_index(
        op.f("ix_branch_series_series_id"), "branch_series", ["series_id"], unique=False
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("branch_id", sa.Integer(), nullable=False),
        sa.Column("executor", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("kernel", sa.Text(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("reproduce", sa.Text(), nullable=False),
        sa.Column("log_dir", sa.Text(), nullable=True),
        sa.Column("link", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["branch_id"],
            ["branches.id"],
            name=op.f("fk_runs_branch_id_branches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(
        op.f("ix_runs_branch_id_executor"), "runs", ["branch_id", "executor"], unique=False
    )
    op.create_index(
        op.f("ix_runs_executor_started_at"), "runs", ["executor", "started_at"], unique=False
    )
    op.create_table(
        "tests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("grp", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("retry_outcome", sa.Text(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.Column("retry_duration", sa.Float(), nullable=True),
        sa.Column("log_path", sa.Text(), nullable=True),
        sa.Column("retry_log_path", sa.Text(), nullable=True),
        sa.Column("reproduce", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_tests_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tests")),
    )
    op.create_index(
        op.f("ix_tests_grp_name_run_id"), "tests", ["grp", "name", "run_id"], unique=False
    )
    op.create_index(op.f("ix_tests_run_id"), "tests", ["run_id"], unique=False)
    op.create_table(
        "crashes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("test_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("excerpt", sa.Text(), nullable=False),
        sa.Column("ignored", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_crashes_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["test_id"], ["tests.id"], name=op.f("fk_crashes_test_id_tests"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crashes")),
    )
    op.create_index(op.f("ix_crashes_fingerprint"), "crashes", ["fingerprint"], unique=False)
    op.create_index(op.f("ix_crashes_run_id"), "crashes", ["run_id"], unique=False)
    op.create_index(op.f("ix_crashes_test_id"), "crashes", ["test_id"], unique=False)
    op.create_table(
        "subtests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("test_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("retry_outcome", sa.Text(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["test_id"], ["tests.id"], name=op.f("fk_subtests_test_id_tests"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subtests")),
    )
    op.create_index(op.f("ix_subtests_test_id"), "subtests", ["test_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_subtests_test_id"), table_name="subtests")
    op.drop_table("subtests")
    op.drop_index(op.f("ix_crashes_test_id"), table_name="crashes")
    op.drop_index(op.f("ix_crashes_run_id"), table_name="crashes")
    op.drop_index(op.f("ix_crashes_fingerprint"), table_name="crashes")
    op.drop_table("crashes")
    op.drop_index(op.f("ix_tests_run_id"), table_name="tests")
    op.drop_index(op.f("ix_tests_grp_name_run_id"), table_name="tests")
    op.drop_table("tests")
    op.drop_index(op.f("ix_runs_executor_started_at"), table_name="runs")
    op.drop_index(op.f("ix_runs_branch_id_executor"), table_name="runs")
    op.drop_table("runs")
    op.drop_index(op.f("ix_branch_series_series_id"), table_name="branch_series")
    op.drop_table("branch_series")
    op.drop_index(op.f("ix_branches_stream_date"), table_name="branches")
    op.drop_table("branches")
    # ### end Alembic commands ###
