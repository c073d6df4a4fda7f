"""A study held because the series chosen for the model looks incomplete.

The hold lives in the study row (reason, since when), so a restart keeps it, and every change
is an audit event in the same transaction. Late instances reopen the study as for any study;
when it completes again the router judges the series again and releases or keeps the hold.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, func, select, update

from gateway.audit import AuditKind, Outcome, audit_row, record
from gateway.models import Study


def hold_study(
    connection: Connection,
    study_id: int,
    study_uid: str,
    series_uid: str,
    reason: str,
    hold_s: float,
    now: datetime,
) -> None:
    """Hold (or keep holding) the study; the deadline counts from the first hold."""
    connection.execute(
        update(Study)
        .where(Study.id == study_id)
        .values(
            series_hold_reason=reason,
            series_held_at=func.coalesce(Study.series_held_at, now),
        )
    )
    record(
        connection,
        audit_row(
            AuditKind.STUDY_HELD,
            Outcome.FAILURE,
            actor="router",
            study_instance_uid=study_uid,
            detail={"series": series_uid, "reason": reason, "hold_s": hold_s},
            occurred_at=now,
        ),
    )


def end_hold(
    connection: Connection, study_id: int, study_uid: str, series_uid: str, now: datetime
) -> bool:
    """Clear a hold because the series is now complete; True (and audited) if one was set."""
    held = connection.execute(
        select(Study.series_hold_reason).where(
            Study.id == study_id, Study.series_held_at.is_not(None)
        )
    ).first()
    if held is None:
        return False
    connection.execute(
        update(Study)
        .where(Study.id == study_id)
        .values(series_hold_reason=None, series_held_at=None)
    )
    record(
        connection,
        audit_row(
            AuditKind.STUDY_RELEASED,
            actor="router",
            study_instance_uid=study_uid,
            detail={"series": series_uid, "was": held.series_hold_reason},
            occurred_at=now,
        ),
    )
    return True
