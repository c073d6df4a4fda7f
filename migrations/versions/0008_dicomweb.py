"""DICOMweb server: per-client API tokens, and the keyed-hash index of accession number and
patient ID that QIDO-RS (and the studies search) match on without storing either in clear.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("client_name", sa.String(16), nullable=False, unique=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("created_by", sa.String(64)),
        sa.Column("revoked_at", TZ),
        sa.Column("revoked_by", sa.String(64)),
        sa.Column("last_used_at", TZ),
        sa.Column("last_used_address", sa.String(64)),
    )
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("accession_number_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("patient_id_hash", sa.String(64), nullable=True))
        batch.create_index("ix_studies_accession_number_hash", ["accession_number_hash"])
        batch.create_index("ix_studies_patient_id_hash", ["patient_id_hash"])


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_index("ix_studies_patient_id_hash")
        batch.drop_index("ix_studies_accession_number_hash")
        batch.drop_column("patient_id_hash")
        batch.drop_column("accession_number_hash")
    op.drop_table("api_tokens")
