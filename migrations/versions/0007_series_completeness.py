"""Series completeness: gaps detected in a received series hold or fail its job.

Per instance, the geometry and counts that show a gap (position along the slice normal,
Images in Acquisition, Acquisition Number); per series, whether an association that carried
it ended without A-RELEASE (a sender that died mid-series); per study, the hold and its reason.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
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
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("slice_position", sa.Float, nullable=True))
        batch.add_column(sa.Column("images_in_acquisition", sa.Integer, nullable=True))
        batch.add_column(sa.Column("acquisition_number", sa.Integer, nullable=True))
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("interrupted_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("interrupted_detail", sa.String(256), nullable=True))
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("series_hold_reason", sa.Text, nullable=True))
        batch.add_column(sa.Column("series_held_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("series_held_at")
        batch.drop_column("series_hold_reason")
    with op.batch_alter_table("series") as batch:
        batch.drop_column("interrupted_detail")
        batch.drop_column("interrupted_at")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("acquisition_number")
        batch.drop_column("images_in_acquisition")
        batch.drop_column("slice_position")
