"""Pull from the PACS: retrospective runs, the studies they (or a job's prior) pulled, and
the prior each job asked for.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)
UID = sa.String(64)


def upgrade() -> None:
    op.create_table(
        "pull_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("criteria", sa.JSON, nullable=False),
        sa.Column("transport", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(128), nullable=False),
        sa.Column("batch_size", sa.Integer, nullable=False),
        sa.Column("studies_total", sa.Integer, nullable=False),
        sa.Column("studies_pulled", sa.Integer, nullable=False),
        sa.Column("studies_failed", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("started_at", TZ),
        sa.Column("finished_at", TZ),
        sa.Column("updated_at", TZ, nullable=False),
    )
    op.create_table(
        "pulled_studies",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("pull_runs.id", ondelete="CASCADE")),
        sa.Column("batch", sa.Integer),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("study_instance_uid", UID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("instances_listed", sa.Integer),
        sa.Column("instances_stored", sa.Integer),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.Column("pulled_at", TZ),
    )
    op.create_index(
        "ix_pulled_studies_study_instance_uid", "pulled_studies", ["study_instance_uid"]
    )
    op.create_index("ix_pulled_studies_run_batch", "pulled_studies", ["run_id", "batch"])
    op.create_table(
        "job_priors",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "job_id",
            sa.Integer,
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
            unique=True,
        ),
        sa.Column("study_instance_uid", UID, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("prior_study_instance_uid", UID),
        sa.Column("reason", sa.Text),
        sa.Column("deadline_at", TZ, nullable=False),
        sa.Column("claimed_at", TZ),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("finished_at", TZ),
    )
    op.create_index("ix_job_priors_state", "job_priors", ["state"])


def downgrade() -> None:
    op.drop_table("job_priors")
    op.drop_table("pulled_studies")
    op.drop_table("pull_runs")
