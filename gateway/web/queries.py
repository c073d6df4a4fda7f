"""Read-only queries the dashboard and /metrics share."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select

from gateway.audit import AuditKind
from gateway.models import AuditEvent, Delivery, DeliveryState, Instance, Job, JobState, Study


@dataclass(frozen=True)
class Counts:
    instances_hour: int
    instances_day: int
    instances_total: int
    studies_day: int
    studies_total: int
    delivered_hour: int
    delivered_day: int
    failed_hour: int
    failed_day: int
    queued: int
    running: int


def _count(connection: Connection, statement: object) -> int:
    return int(connection.execute(statement).scalar_one())  # type: ignore[call-overload]


def counts(connection: Connection, now: datetime) -> Counts:
    hour, day = now - timedelta(hours=1), now - timedelta(days=1)

    def instances(since: datetime | None) -> int:
        query = select(func.count()).select_from(Instance)
        if since is not None:
            query = query.where(Instance.received_at >= since)
        return _count(connection, query)

    def jobs(state: JobState, since: datetime) -> int:
        return _count(
            connection,
            select(func.count())
            .select_from(Job)
            .where(Job.state == state, Job.finished_at >= since),
        )

    def in_state(*states: JobState) -> int:
        return _count(
            connection, select(func.count()).select_from(Job).where(Job.state.in_(states))
        )

    return Counts(
        instances_hour=instances(hour),
        instances_day=instances(day),
        instances_total=instances(None),
        studies_day=_count(
            connection,
            select(func.count()).select_from(Study).where(Study.first_received_at >= day),
        ),
        studies_total=_count(connection, select(func.count()).select_from(Study)),
        delivered_hour=jobs(JobState.DELIVERED, hour),
        delivered_day=jobs(JobState.DELIVERED, day),
        failed_hour=jobs(JobState.FAILED, hour),
        failed_day=jobs(JobState.FAILED, day),
        queued=in_state(JobState.QUEUED),
        running=in_state(JobState.RUNNING, JobState.INFERRED, JobState.RESULTS_BUILT),
    )


def recent_failed_jobs(connection: Connection, limit: int = 10) -> list[object]:
    return list(
        connection.execute(
            select(
                Job.id,
                Job.study_instance_uid,
                Job.rule_name,
                Job.last_error,
                Job.finished_at,
                Job.attempts,
            )
            .where(Job.state == JobState.FAILED)
            .order_by(Job.finished_at.desc(), Job.id.desc())
            .limit(limit)
        ).all()
    )


def recent_failed_deliveries(connection: Connection, limit: int = 10) -> list[object]:
    return list(
        connection.execute(
            select(
                Delivery.destination,
                Delivery.study_instance_uid,
                Delivery.kind,
                Delivery.last_error,
                Delivery.updated_at,
            )
            .where(Delivery.state == DeliveryState.FAILED)
            .order_by(Delivery.updated_at.desc())
            .limit(limit)
        ).all()
    )


def jobs_by_state(connection: Connection) -> dict[str, int]:
    found = dict(
        connection.execute(select(Job.state, func.count()).group_by(Job.state)).tuples().all()
    )
    return {state.value: int(found.get(state, 0)) for state in JobState}


def deliveries_by_state(connection: Connection) -> dict[str, int]:
    found = dict(
        connection.execute(select(Delivery.state, func.count()).group_by(Delivery.state))
        .tuples()
        .all()
    )
    return {state.value: int(found.get(state, 0)) for state in DeliveryState}


def deliveries_failed_for_good(connection: Connection) -> int:
    """Deliveries that ever failed for good, counted from the audit log: a counter that
    only grows (a retry sets the delivery's row back to pending, but its failure stays)."""
    return int(
        connection.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.kind == AuditKind.DELIVERY_FAILED)
        ).scalar_one()
    )


def mean_stage_seconds(connection: Connection, recent: int = 1000) -> dict[str, float]:
    """Mean seconds per stage over the most recent jobs that recorded it."""
    sums: dict[str, float] = defaultdict(float)
    numbers: dict[str, int] = defaultdict(int)
    for stage_seconds in connection.execute(
        select(Job.stage_seconds)
        .where(Job.stage_seconds.is_not(None))
        .order_by(Job.id.desc())
        .limit(recent)
    ).scalars():
        for stage, seconds in (stage_seconds or {}).items():
            if isinstance(seconds, int | float):
                sums[stage] += float(seconds)
                numbers[stage] += 1
    return {stage: sums[stage] / numbers[stage] for stage in sorted(sums)}
