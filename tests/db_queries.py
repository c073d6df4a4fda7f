"""Read-only helpers for asserting on what the gateway committed."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Engine, func, select

from gateway.models import AuditEvent, Instance, Study


def instance_rows(engine: Engine) -> dict[str, Instance]:
    with engine.connect() as connection:
        rows = connection.execute(select(Instance)).all()
    return {row.sop_instance_uid: row for row in rows}


def audit_kinds(engine: Engine) -> Counter[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(AuditEvent.kind, func.count()).group_by(AuditEvent.kind)
        ).all()
    return Counter({kind: count for kind, count in rows})


def study(engine: Engine, study_uid: str) -> Study | None:
    with engine.connect() as connection:
        return connection.execute(  # type: ignore[return-value]
            select(Study).where(Study.study_instance_uid == study_uid)
        ).first()
