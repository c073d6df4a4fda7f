"""Watch the models: the pipeline version each job ran, shadow jobs (a rule's second pipeline,
results stored, never delivered: they end in the job state `stored`) and the per-study
comparison of a shadow job with its primary job.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
UID = sa.String(64)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # The job state a shadow job ends in; SQLite stores the enum as plain text.
        op.execute("ALTER TYPE job_state ADD VALUE IF NOT EXISTS 'stored'")
    with op.batch_alter_table("routing_rules") as batch:
        batch.add_column(sa.Column("shadow_pipeline", sa.String(64), nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("pipeline_version", sa.String(32), nullable=True))
        batch.add_column(
            sa.Column(
                "shadow_of",
                sa.Integer,
                sa.ForeignKey("jobs.id", ondelete="CASCADE", name="fk_jobs_shadow_of"),
                nullable=True,
            )
        )
        batch.create_index("ix_jobs_shadow_of", ["shadow_of"])
        batch.create_index("ix_jobs_pipeline_created", ["pipeline", "created_at"])
    op.create_table(
        "shadow_comparisons",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "shadow_job_id",
            sa.Integer,
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column(
            "primary_job_id",
            sa.Integer,
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("study_instance_uid", UID, nullable=False),
        sa.Column("primary_positive", sa.Boolean),
        sa.Column("shadow_positive", sa.Boolean),
        sa.Column("findings_agree", sa.Boolean),
        sa.Column("primary_score", sa.Float),
        sa.Column("shadow_score", sa.Float),
        sa.Column("score_difference", sa.Float),
        sa.Column("primary_findings", sa.Integer, nullable=False),
        sa.Column("shadow_findings", sa.Integer, nullable=False),
        sa.Column("mean_dice", sa.Float),
        sa.Column("segments", sa.JSON, nullable=False),
        sa.Column("problem", sa.Text),
        sa.Column("computed_at", TZ, nullable=False),
    )
    op.create_index(
        "ix_shadow_comparisons_primary_job_id", "shadow_comparisons", ["primary_job_id"]
    )


def downgrade() -> None:
    # PostgreSQL cannot drop an enum value; the jobs that used it end as the nearest state
    # the older code knows.
    op.execute("UPDATE jobs SET state = 'delivered' WHERE state = 'stored'")
    op.drop_table("shadow_comparisons")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_pipeline_created")
        batch.drop_index("ix_jobs_shadow_of")
        batch.drop_column("shadow_of")
        batch.drop_column("pipeline_version")
    with op.batch_alter_table("routing_rules") as batch:
        batch.drop_column("shadow_pipeline")
