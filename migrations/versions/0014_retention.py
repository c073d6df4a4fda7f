"""Retention: a study whose spool files were purged keeps its rows, with when (and through
which instance) the purge was decided and whether its files are still being removed.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("spool_purged_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("spool_purge_through_id", sa.Integer, nullable=True))
        batch.add_column(
            sa.Column("spool_purge_pending", sa.Boolean, nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    # Loses only the record of which studies were purged (their files are gone either way).
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("spool_purge_pending")
        batch.drop_column("spool_purge_through_id")
        batch.drop_column("spool_purged_at")
