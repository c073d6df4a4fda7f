"""Migration 0010 (the `prior` column of `routing_rules`) on SQLite and PostgreSQL: a rule
seeded before it took its prior from the settings' rule of the same name, so the upgrade
copies that value into the row (and only into that row); the downgrade removes the column."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine, inspect, text

from gateway import migrate
from gateway.database import make_engine
from gateway.settings import GatewaySettings
from tests.conftest import make_settings

PRIOR = {"within_years": 3.0, "same_body_part": False, "wait_s": 90.0}


def _seeded_before(engine: Engine) -> None:
    """Two rules as 0009's seeding wrote them (no prior column yet)."""
    with engine.begin() as connection:
        for position, name in enumerate(("chest-ct", "head-ct")):
            connection.execute(
                text(
                    "INSERT INTO routing_rules (name, position, enabled, priority, conditions,"
                    " pipeline, rerun_on_update, created_at, updated_at) VALUES (:name,"
                    " :position, :yes, 'routine', '[]', 'lung_nodules', :no, :now, :now)"
                ),
                {
                    "name": name,
                    "position": position,
                    "yes": True,
                    "no": False,
                    "now": "2026-01-01 00:00:00+00:00",
                },
            )


def _priors(engine: Engine) -> dict[str, object]:
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT name, prior FROM routing_rules")).all()
    # JSON comes back parsed on PostgreSQL and as text on SQLite
    return {n: json.loads(p) if isinstance(p, str) else p for n, p in rows}


def test_upgrade_copies_the_settings_prior_and_downgrade_drops_it(
    settings: GatewaySettings, tmp_path: Path
) -> None:
    configured = make_settings(
        tmp_path / "data",
        settings.sqlalchemy_url,
        routing={
            "rules": [
                {"name": "chest-ct", "prior": PRIOR},
                {"name": "head-ct"},
                {"name": "not-seeded", "prior": PRIOR},
            ]
        },
    )
    engine = make_engine(configured)
    migrate.upgrade(configured, "0009", engine=engine)
    _seeded_before(engine)
    migrate.upgrade(configured, "0010", engine=engine)
    assert _priors(engine) == {"chest-ct": PRIOR, "head-ct": None}
    migrate.downgrade(configured, "0009", engine=engine)
    columns = {c["name"] for c in inspect(engine).get_columns("routing_rules")}
    assert "prior" not in columns and "pipeline" in columns
    migrate.upgrade(configured, "0010", engine=engine)  # and up again, cleanly
    assert _priors(engine) == {"chest-ct": PRIOR, "head-ct": None}
    engine.dispose()
