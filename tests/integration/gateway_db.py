"""Read what the gateway recorded: instance/series/study rows and audit events."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, select

from gateway.models import AuditEvent, Instance, Series, Study


@dataclass(frozen=True)
class InstanceRow:
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    series_instance_uid: str
    study_instance_uid: str
    file_path: str
    size_bytes: int
    calling_ae: str


def instance_rows(engine: Engine) -> dict[str, InstanceRow]:
    """Every stored instance, by SOP Instance UID."""
    statement = (
        select(
            Instance.sop_instance_uid,
            Instance.sop_class_uid,
            Instance.transfer_syntax_uid,
            Series.series_instance_uid,
            Study.study_instance_uid,
            Instance.file_path,
            Instance.size_bytes,
            Instance.calling_ae,
        )
        .join(Series, Instance.series_id == Series.id)
        .join(Study, Series.study_id == Study.id)
    )
    with engine.connect() as connection:
        rows = connection.execute(statement).all()
    return {row[0]: InstanceRow(*row) for row in rows}


def study_row(engine: Engine, study_instance_uid: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            select(Study).where(Study.study_instance_uid == study_instance_uid)
        ).one_or_none()


def series_rows(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        rows = connection.execute(select(Series)).all()
    return {row.series_instance_uid: row for row in rows}


def count_rows(engine: Engine, model: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(model)).scalar_one())


def audit_events(engine: Engine, kind: str | None = None) -> list[Any]:
    statement = select(AuditEvent).order_by(AuditEvent.id)
    if kind is not None:
        statement = statement.where(AuditEvent.kind == kind)
    with engine.connect() as connection:
        return list(connection.execute(statement).all())


def audit_counts(engine: Engine) -> Counter[str]:
    return Counter(event.kind for event in audit_events(engine))


def wait_for_study_state(
    engine: Engine, study_instance_uid: str, state: str, timeout_s: float = 15.0
) -> Any:
    """Poll until the study row has `state`; fail naming what was found."""
    deadline = time.monotonic() + timeout_s
    row = None
    while time.monotonic() < deadline:
        row = study_row(engine, study_instance_uid)
        if row is not None and str(row.state) == state:
            return row
        time.sleep(0.1)
    found = "no study row" if row is None else f"state {row.state}"
    raise AssertionError(f"expected study in state {state} within {timeout_s}s, found {found}")


def wait_for_audit(engine: Engine, kind: str, count: int, timeout_s: float = 10.0) -> list[Any]:
    """Audit rows are written by the listener's threads; wait until `count` of `kind` exist."""
    deadline = time.monotonic() + timeout_s
    events: list[Any] = []
    while time.monotonic() < deadline:
        events = audit_events(engine, kind)
        if len(events) >= count:
            return events
        time.sleep(0.05)
    raise AssertionError(f"expected {count} {kind} audit events, found {len(events)}")
