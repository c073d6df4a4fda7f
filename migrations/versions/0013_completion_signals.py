"""Completion signals: MPPS state, storage commitment requests, the instances each lists,
series triggers, and the rule settings for them (trigger, series and study quiet periods).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
UID = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "performed_procedure_steps",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sop_instance_uid", UID, nullable=False, unique=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("study_instance_uid", UID, index=True),
        sa.Column("calling_ae", sa.String(16), nullable=False),
        sa.Column("source_address", sa.String(64)),
        sa.Column("discontinued_reason", sa.String(256)),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("settled_at", TZ),
    )
    op.create_index("ix_pps_status_settled", "performed_procedure_steps", ["status", "settled_at"])
    op.create_table(
        "storage_commitments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("transaction_uid", UID, nullable=False, unique=True),
        sa.Column("calling_ae", sa.String(16), nullable=False),
        sa.Column("source_address", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requested_at", TZ, nullable=False),
        sa.Column("answer_by", TZ, nullable=False),
        sa.Column("claimed_by", sa.String(128)),
        sa.Column("claimed_at", TZ),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("event_type", sa.Integer),
        sa.Column("failed_count", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("reported_at", TZ),
        sa.Column("reported_via", sa.String(32)),
        sa.Column("settled_at", TZ),
    )
    op.create_index("ix_storage_commitments_state", "storage_commitments", ["state"])
    op.create_table(
        "expected_instances",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "mpps_id",
            sa.Integer,
            sa.ForeignKey("performed_procedure_steps.id", ondelete="CASCADE"),
            index=True,
        ),
        sa.Column(
            "commitment_id",
            sa.Integer,
            sa.ForeignKey("storage_commitments.id", ondelete="CASCADE"),
            index=True,
        ),
        sa.Column("series_instance_uid", UID, index=True),
        sa.Column("sop_class_uid", UID, nullable=False),
        sa.Column("sop_instance_uid", UID, nullable=False, index=True),
    )
    op.create_table(
        "series_triggers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "study_id",
            sa.Integer,
            sa.ForeignKey("studies.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("series_instance_uid", UID, nullable=False),
        sa.Column("rule_name", sa.String(64), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("instance_count", sa.Integer, nullable=False),
        sa.Column("signal", sa.String(64), nullable=False),
        sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id", ondelete="SET NULL")),
        sa.Column("triggered_at", TZ, nullable=False),
        sa.UniqueConstraint(
            "study_id", "rule_name", "generation", name="uq_series_triggers_generation"
        ),
    )
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("completed_by", sa.String(64)))
    with op.batch_alter_table("routing_rules") as batch:
        batch.add_column(sa.Column("trigger", sa.String(8), nullable=False, server_default="study"))
        batch.add_column(sa.Column("series_quiet_period_s", sa.Float))
        batch.add_column(sa.Column("quiet_period_s", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("routing_rules") as batch:
        batch.drop_column("quiet_period_s")
        batch.drop_column("series_quiet_period_s")
        batch.drop_column("trigger")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("completed_by")
    op.drop_table("series_triggers")
    op.drop_table("expected_instances")
    op.drop_index("ix_storage_commitments_state", "storage_commitments")
    op.drop_table("storage_commitments")
    op.drop_index("ix_pps_status_settled", "performed_procedure_steps")
    op.drop_table("performed_procedure_steps")
