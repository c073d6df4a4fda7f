"""The database: it answers (and how fast), and its schema is the migrations' head."""

from __future__ import annotations

import time
from datetime import datetime

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from gateway.health.status import Level, PartHealth
from gateway.migrate import alembic_config
from gateway.settings import GatewaySettings

PART = "database"
SLOW_S = 1.0


def database_health(settings: GatewaySettings, engine: Engine, now: datetime) -> PartHealth:
    name = engine.dialect.name
    started = time.monotonic()
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            current = MigrationContext.configure(connection).get_current_revision()
    except Exception as exc:
        return PartHealth(
            PART,
            name,
            Level.RED,
            f"expected the database to answer, found {type(exc).__name__}",
            None,
        )
    elapsed = time.monotonic() - started
    head = ScriptDirectory.from_config(alembic_config(settings)).get_current_head()
    facts = (("schema", current or "none"), ("answered in", f"{elapsed * 1000:.0f} ms"))
    if current != head:
        return PartHealth(
            PART,
            name,
            Level.AMBER,
            f"schema {current or 'none'}, expected {head}: run `pacs-gateway migrate`",
            now,
            facts,
        )
    if elapsed > SLOW_S:
        return PartHealth(
            PART, name, Level.AMBER, f"slow: {elapsed:.1f} s for SELECT 1", now, facts
        )
    return PartHealth(PART, name, Level.GREEN, "answers", now, facts)
