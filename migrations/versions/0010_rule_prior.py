"""Rule priors in the table: a routing rule made or edited in the admin UI can ask for the
most recent prior study of the same patient (the `prior` of `RuleSettings`, as JSON).

Until now a rule read from the table took its prior from the settings' rule of the same name;
the upgrade copies those settings values into the rows of that name, so a rule seeded before
keeps waiting for its prior. From here on the table is the only source.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _settings_priors() -> dict[str, dict[str, object]]:
    """Rule name -> the `prior` the settings give it (as env.py finds the settings)."""
    from gateway.settings import load_settings

    settings = context.config.attributes.get("settings") or load_settings()
    return {
        rule.name: rule.prior.model_dump(mode="json")
        for rule in settings.routing.rules
        if rule.prior is not None
    }


def upgrade() -> None:
    with op.batch_alter_table("routing_rules") as batch:
        batch.add_column(sa.Column("prior", sa.JSON, nullable=True))
    rules = sa.table("routing_rules", sa.column("name", sa.String), sa.column("prior", sa.JSON))
    for name, prior in _settings_priors().items():
        op.execute(
            rules.update().where(rules.c.name == name, rules.c.prior.is_(None)).values(prior=prior)
        )


def downgrade() -> None:
    with op.batch_alter_table("routing_rules") as batch:
        batch.drop_column("prior")
