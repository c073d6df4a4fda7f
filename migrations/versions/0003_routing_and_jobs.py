"""Routing rules and pipeline jobs.

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

JOB_STATE = sa.Enum(
    "queued",
    "running",
    "inferred",
    "results_built",
    "delivered",
    "failed",
    "cancelled",
    name="job_state",
)
TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(
            sa.Column("routed_generation", sa.Integer, nullable=False, server_default="0")
        )
    op.create_table(
        "routing_rules",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("conditions", sa.JSON, nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("destinations", sa.JSON),
        sa.Column("rerun_on_update", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("rule_name", sa.String(64), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("model_key", sa.String(255), nullable=False),
        sa.Column("series_instance_uid", sa.String(64), nullable=False),
        sa.Column("destinations", sa.JSON, nullable=False),
        sa.Column("priority", sa.String(16), nullable=False),
        sa.Column("state", JOB_STATE, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("summary", sa.JSON),
        sa.Column("stage_seconds", sa.JSON),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("enqueued_at", TZ),
        sa.Column("started_at", TZ),
        sa.Column("inferred_at", TZ),
        sa.Column("results_built_at", TZ),
        sa.Column("delivered_at", TZ),
        sa.Column("finished_at", TZ),
        sa.Column("updated_at", TZ, nullable=False),
        sa.UniqueConstraint(
            "study_instance_uid", "pipeline", "model_key", "generation", name="uq_jobs_run"
        ),
    )
    op.create_index("ix_jobs_study_instance_uid", "jobs", ["study_instance_uid"])
    op.create_index("ix_jobs_state", "jobs", ["state"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("routing_rules")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("routed_generation")
    JOB_STATE.drop(op.get_bind(), checkfirst=True)
