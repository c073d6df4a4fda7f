"""Delivery state of result objects per destination.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELIVERY_STATE = sa.Enum("pending", "delivered", "failed", name="delivery_state")
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("file_path", sa.Text, nullable=False),
        sa.Column("state", DELIVERY_STATE, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("next_attempt_at", TZ, nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("delivered_at", TZ),
        sa.UniqueConstraint("destination", "sop_instance_uid", name="uq_deliveries_object"),
    )
    op.create_index("ix_deliveries_study_instance_uid", "deliveries", ["study_instance_uid"])
    op.create_index("ix_deliveries_state_next_attempt", "deliveries", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("deliveries")
    DELIVERY_STATE.drop(op.get_bind(), checkfirst=True)
