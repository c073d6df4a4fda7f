"""Alembic: upgrade head and downgrade base on SQLite and the real PostgreSQL; the audit
log is append-only in the database itself."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DatabaseError

from gateway import migrate
from gateway.audit import AuditKind, audit_row, record
from gateway.database import make_engine
from gateway.settings import GatewaySettings

TABLES = {
    "studies",
    "series",
    "instances",
    "audit_events",
    "deliveries",
    "routing_rules",
    "jobs",
    "users",
    "destinations",
}


def test_upgrade_head_then_downgrade_base(settings: GatewaySettings) -> None:
    engine = make_engine(settings)
    migrate.upgrade(settings, engine=engine)
    assert set(inspect(engine).get_table_names()) >= TABLES
    migrate.downgrade(settings, "base", engine=engine)
    assert not TABLES & set(inspect(engine).get_table_names())
    migrate.upgrade(settings, engine=engine)  # and up again, cleanly
    assert set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()


def test_audit_events_cannot_be_updated_or_deleted(engine: Engine) -> None:
    with engine.begin() as connection:
        record(connection, audit_row(AuditKind.STUDY_COMPLETE, study_instance_uid="1.2.3"))
    for statement in ("UPDATE audit_events SET outcome = 'failure'", "DELETE FROM audit_events"):
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as connection:
            connection.execute(text(statement))
    with engine.connect() as connection:
        assert connection.execute(text("SELECT outcome FROM audit_events")).scalar() == "success"


def test_serve_refuses_an_unmigrated_database(settings: GatewaySettings) -> None:
    from gateway.service import DatabaseNotMigrated, check_schema_current

    engine = make_engine(settings)
    with pytest.raises(
        DatabaseNotMigrated, match=r"expected database schema revision \d{4}, found none"
    ):
        check_schema_current(settings, engine)
    engine.dispose()


def test_models_and_migrations_agree(engine: Engine) -> None:
    """What the migrations build is what the models describe (no forgotten migration)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from gateway.models import Base

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []
