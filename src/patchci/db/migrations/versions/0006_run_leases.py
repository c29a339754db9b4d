"""runs.worker, runs.lease_until, runs.attempts: a test-branch run is held with a lease, so
the run of a killed daemon is run again once (and stored once) instead of staying
`running` forever.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE, never a batch copy: dropping the old `runs` would cascade into every
# test result (tests, subtests, crashes, the matrix).


def upgrade() -> None:
    op.add_column("runs", sa.Column("worker", sa.Text(), nullable=False, server_default=""))
    op.add_column("runs", sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column("runs", sa.Column("attempts", sa.Integer(), nullable=False, server_default="1"))


def downgrade() -> None:
    op.drop_column("runs", "attempts")
    op.drop_column("runs", "lease_until")
    op.drop_column("runs", "worker")
