"""jobs.lease_until: work is claimed with a lease, so several daemons share one database
and the jobs of a killed one are taken up again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE (SQLite >= 3.35 drops columns too): a batch migration would copy the
# table and drop the old one, and with foreign keys on that drop cascades into `results`.


def upgrade() -> None:
    op.add_column("jobs", sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column("jobs", "lease_until")
