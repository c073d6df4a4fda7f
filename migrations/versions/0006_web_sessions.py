"""Web sessions (server-side, revocable) and login attempt counters.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column(
            "user_id",
            sa.Integer,
            sa.ForeignKey("users.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("last_seen_at", TZ, nullable=False),
        sa.Column("source_address", sa.String(64)),
        sa.Column("user_agent", sa.String(200)),
        sa.Column("ended_at", TZ),
        sa.Column("end_reason", sa.String(64)),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])
    op.create_table(
        "login_failures",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("source_address", sa.String(64), nullable=False),
        sa.Column("device", sa.String(64)),
    )
    op.create_index("ix_login_failures_occurred_at", "login_failures", ["occurred_at"])
    op.create_index("ix_login_failures_username", "login_failures", ["username", "occurred_at"])
    op.create_index(
        "ix_login_failures_address", "login_failures", ["source_address", "occurred_at"]
    )


def downgrade() -> None:
    op.drop_table("login_failures")
    op.drop_table("web_sessions")
