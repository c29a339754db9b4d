"""patches.pull_url: the repository and ref a `[GIT PULL]` mail asks to pull.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("patches", sa.Column("pull_url", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("patches", "pull_url")
