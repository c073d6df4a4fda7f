"""Delivery state in the database: queue objects for destinations, claim due ones, record
outcomes. Each change is written with its audit event in one transaction."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, select, update

from gateway.audit import AuditKind, Outcome, audit_row, record, utcnow
from gateway.database import insert_ignoring_duplicates
from gateway.delivery.config import DeliverySettings
from gateway.delivery.outcome import SendOutcome
from gateway.models import Delivery, DeliveryState
from gateway.results.stored import StoredResult


@dataclass(frozen=True)
class ClaimedDelivery:
    id: int
    destination: str
    study_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    kind: str
    file_path: str
    attempts: int


def queue_deliveries(
    connection: Connection,
    results: Sequence[StoredResult],
    destinations: Iterable[str],
    now: datetime | None = None,
) -> int:
    """One pending row per (destination, object), due at once. An object already queued for
    a destination keeps its row (and state): a rerun never delivers a second copy of what
    was delivered. Returns how many rows were added."""
    now = now or utcnow()
    added = 0
    for destination in destinations:
        for result in results:
            statement = (
                insert_ignoring_duplicates(
                    connection, Delivery, ["destination", "sop_instance_uid"]
                )
                .values(
                    destination=destination,
                    study_instance_uid=result.study_instance_uid,
                    series_instance_uid=result.series_instance_uid,
                    sop_instance_uid=result.sop_instance_uid,
                    sop_class_uid=result.sop_class_uid,
                    kind=result.kind,
                    file_path=result.relative_path,
                    state=DeliveryState.PENDING,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
                .returning(Delivery.id)  # rowcount is -1 with RETURNING on psycopg
            )
            if connection.execute(statement).first() is not None:
                added += 1
                record(
                    connection,
                    audit_row(
                        AuditKind.DELIVERY_QUEUED,
                        actor="delivery",
                        study_instance_uid=result.study_instance_uid,
                        sop_instance_uid=result.sop_instance_uid,
                        detail={"destination": destination, "kind": result.kind},
                        occurred_at=now,
                    ),
                )
    return added


def claim_due(
    connection: Connection,
    lease: timedelta,
    limit: int,
    now: datetime | None = None,
    study_instance_uid: str | None = None,
) -> list[ClaimedDelivery]:
    """Pending rows due now, leased to the caller by moving their next attempt past the
    lease: another sender skips them, and they fall due again if this one dies."""
    now = now or utcnow()
    query = (
        select(
            Delivery.id,
            Delivery.destination,
            Delivery.study_instance_uid,
            Delivery.sop_instance_uid,
            Delivery.sop_class_uid,
            Delivery.kind,
            Delivery.file_path,
            Delivery.attempts,
        )
        .where(Delivery.state == DeliveryState.PENDING, Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
        .with_for_update(skip_locked=True)  # PostgreSQL; SQLite's BEGIN IMMEDIATE serialises
    )
    if study_instance_uid is not None:
        query = query.where(Delivery.study_instance_uid == study_instance_uid)
    claimed = [ClaimedDelivery(*row) for row in connection.execute(query).all()]
    if claimed:
        connection.execute(
            update(Delivery)
            .where(Delivery.id.in_([c.id for c in claimed]))
            .values(next_attempt_at=now + lease, updated_at=now)
        )
    return claimed


def record_outcome(
    connection: Connection,
    claimed: ClaimedDelivery,
    outcome: SendOutcome,
    settings: DeliverySettings,
    now: datetime | None = None,
) -> DeliveryState:
    """Write what one attempt came to, with its audit event; returns the new state."""
    now = now or utcnow()
    attempts = claimed.attempts + 1
    detail: dict[str, object] = {
        "destination": claimed.destination,
        "kind": claimed.kind,
        "attempt": attempts,
    }
    values: dict[str, object] = {"attempts": attempts, "updated_at": now}
    if outcome.delivered:
        state, kind, result = DeliveryState.DELIVERED, AuditKind.DELIVERY_DELIVERED, Outcome.SUCCESS
        values.update(delivered_at=now, last_error=outcome.reason or None)
        if outcome.reason:
            detail["note"] = outcome.reason
    elif outcome.permanent or attempts >= settings.max_attempts:
        state, kind, result = DeliveryState.FAILED, AuditKind.DELIVERY_FAILED, Outcome.FAILURE
        reason = (
            outcome.reason
            if outcome.permanent
            else (f"{outcome.reason}; gave up after {attempts} attempts")
        )
        values.update(last_error=reason)
        detail.update(reason=reason, permanent=outcome.permanent)
    else:
        state, kind, result = DeliveryState.PENDING, AuditKind.DELIVERY_RETRY, Outcome.FAILURE
        delay = settings.backoff_s(attempts)
        values.update(last_error=outcome.reason, next_attempt_at=now + timedelta(seconds=delay))
        detail.update(reason=outcome.reason, retry_in_s=round(delay, 3))
    values["state"] = state
    connection.execute(update(Delivery).where(Delivery.id == claimed.id).values(**values))
    record(
        connection,
        audit_row(
            kind,
            result,
            actor="delivery",
            study_instance_uid=claimed.study_instance_uid,
            sop_instance_uid=claimed.sop_instance_uid,
            detail=detail,
            occurred_at=now,
        ),
    )
    return state
