"""Studies, series, instances and the append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STUDY_STATE = sa.Enum("receiving", "complete", "updated", name="study_state")
TZ = sa.DateTime(timezone=True)

_PG_APPEND_ONLY = """
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
"""


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("study_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("state", STUDY_STATE, nullable=False),
        sa.Column("study_date", sa.String(8)),
        sa.Column("study_description", sa.String(64)),
        sa.Column("first_calling_ae", sa.String(16)),
        sa.Column("instance_count", sa.Integer, nullable=False),
        sa.Column("first_received_at", TZ, nullable=False),
        sa.Column("last_received_at", TZ, nullable=False),
        sa.Column("completed_at", TZ),
        sa.Column("completion_count", sa.Integer, nullable=False),
        sa.Column("reopened_at", TZ),
    )
    op.create_index("ix_studies_state_last_received", "studies", ["state", "last_received_at"])
    op.create_table(
        "series",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "study_id", sa.Integer, sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("series_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("modality", sa.String(16)),
        sa.Column("body_part_examined", sa.String(64)),
        sa.Column("series_description", sa.String(64)),
        sa.Column("series_number", sa.Integer),
        sa.Column("slice_thickness", sa.Float),
        sa.Column("frame_of_reference_uid", sa.String(64)),
        sa.Column("instance_count", sa.Integer, nullable=False),
    )
    op.create_index("ix_series_study_id", "series", ["study_id"])
    op.create_table(
        "instances",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "series_id", sa.Integer, sa.ForeignKey("series.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False, unique=True),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(64), nullable=False),
        sa.Column("instance_number", sa.Integer),
        sa.Column("file_path", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("calling_ae", sa.String(16), nullable=False),
        sa.Column("received_at", TZ, nullable=False),
    )
    op.create_index("ix_instances_series_id", "instances", ["series_id"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
        sa.Column("occurred_at", TZ, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128)),
        sa.Column("source_address", sa.String(64)),
        sa.Column("study_instance_uid", sa.String(64)),
        sa.Column("sop_instance_uid", sa.String(64)),
        sa.Column("detail", sa.JSON),
    )
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"])
    op.create_index("ix_audit_events_kind", "audit_events", ["kind"])
    op.create_index("ix_audit_events_study_instance_uid", "audit_events", ["study_instance_uid"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_APPEND_ONLY)
    else:
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_events_no_{action.lower()} BEFORE {action} "
                "ON audit_events BEGIN "
                f"SELECT RAISE(ABORT, 'audit_events is append-only: {action} refused'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_update ON audit_events")
        op.execute("DROP FUNCTION IF EXISTS audit_events_append_only()")
    op.drop_table("audit_events")
    op.drop_table("instances")
    op.drop_table("series")
    op.drop_table("studies")
    STUDY_STATE.drop(op.get_bind(), checkfirst=True)
