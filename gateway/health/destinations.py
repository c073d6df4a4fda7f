"""Each destination: its last delivered object, its last failed attempt (with the error), and
what is queued for it. Red: the latest attempt failed and results wait; amber: the latest
attempt failed with nothing waiting, results wait long, or the destination is disabled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, case, func, select

from gateway.delivery.registry import stored_destinations
from gateway.health.status import Level, PartHealth, as_utc, describe_age
from gateway.models import Delivery, DeliveryState

PART = "destination"
WAITING_LONG = timedelta(minutes=15)
ERROR_CHARS = 200


@dataclass(frozen=True)
class DestinationActivity:
    name: str
    last_success: datetime | None
    last_failure: datetime | None
    last_error: str | None
    queued: int
    oldest_queued: datetime | None


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def destination_activity(connection: Connection) -> dict[str, DestinationActivity]:
    failing = and_(Delivery.last_error.is_not(None), Delivery.state != DeliveryState.DELIVERED)
    pending = Delivery.state == DeliveryState.PENDING
    rows = connection.execute(
        select(
            Delivery.destination,
            func.max(Delivery.delivered_at),
            func.max(case((failing, Delivery.updated_at))),
            func.sum(case((pending, 1), else_=0)),
            func.min(case((pending, Delivery.created_at))),
        ).group_by(Delivery.destination)
    ).all()
    found = {}
    for name, success, failure, queued, oldest in rows:
        error = None
        if failure is not None:
            error = connection.execute(
                select(Delivery.last_error)
                .where(Delivery.destination == name, failing)
                .order_by(Delivery.updated_at.desc(), Delivery.id.desc())
                .limit(1)
            ).scalar()
        found[name] = DestinationActivity(
            name, _utc(success), _utc(failure), error, int(queued or 0), _utc(oldest)
        )
    return found


def judge(activity: DestinationActivity, enabled: bool, now: datetime) -> PartHealth:
    a = activity
    failed_last = a.last_failure is not None and (
        a.last_success is None or a.last_failure > a.last_success
    )
    error = (a.last_error or "")[:ERROR_CHARS]
    facts = (
        ("last success", f"{a.last_success:%Y-%m-%d %H:%M:%S}" if a.last_success else "never"),
        ("last failure", f"{a.last_failure:%Y-%m-%d %H:%M:%S}" if a.last_failure else "never"),
        ("queued", str(a.queued)),
    )
    heartbeat = max((t for t in (a.last_success, a.last_failure) if t is not None), default=None)
    if not enabled:
        level, summary = Level.AMBER, f"disabled; {a.queued} queued"
    elif failed_last and a.queued:
        level, summary = Level.RED, f"failing: {a.queued} queued; last error: {error}"
    elif failed_last:
        level, summary = Level.AMBER, f"last attempt failed: {error}"
    elif a.queued and a.oldest_queued is not None and now - a.oldest_queued > WAITING_LONG:
        age = describe_age((now - a.oldest_queued).total_seconds())
        level, summary = Level.AMBER, f"{a.queued} queued, the oldest for {age}"
    elif a.last_success is None:
        level, summary = Level.GREEN, f"nothing delivered yet; {a.queued} queued"
    else:
        level, summary = Level.GREEN, f"delivering; {a.queued} queued"
    return PartHealth(PART, a.name, level, summary, heartbeat, facts)


def destination_health(engine: Engine, now: datetime) -> list[PartHealth]:
    with engine.connect() as connection:
        stored = stored_destinations(connection)
        activity = destination_activity(connection)
    rows = []
    for destination in stored:
        seen = activity.get(destination.name) or DestinationActivity(
            destination.name, None, None, None, 0, None
        )
        if destination.problem:
            rows.append(PartHealth(PART, destination.name, Level.RED, destination.problem, None))
        else:
            rows.append(judge(seen, destination.enabled, now))
    return rows
