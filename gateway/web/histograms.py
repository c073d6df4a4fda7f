"""Histograms of durations computed by the database from the rows (no process keeps
counters, so every web process and restart agrees): job turnaround (the study's last
instance received to the job delivered), job duration (started to finished) and delivery
latency (queued to delivered). Counts only grow while rows are kept."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, case, func, select

from gateway.models import Delivery, DeliveryState, Job, JobState, Study
from gateway.web.exposition import Histogram, Labels

TURNAROUND_BOUNDS = (30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0)
JOB_DURATION_BOUNDS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
DELIVERY_LATENCY_BOUNDS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


def seconds_between(connection: Connection, later: Any, earlier: Any) -> ColumnElement[Any]:
    """`later - earlier` in seconds, in SQL, on SQLite (julianday) and PostgreSQL."""
    if connection.dialect.name == "sqlite":
        return (func.julianday(later) - func.julianday(earlier)) * 86400.0
    return func.extract("epoch", later - earlier)


def _histograms(
    connection: Connection,
    seconds: ColumnElement[Any],
    labels: Sequence[tuple[str, Any]],
    where: Any,
    bounds: tuple[float, ...],
    join: tuple[Any, Any] | None = None,
) -> list[tuple[Labels, Histogram]]:
    columns = [column for _name, column in labels]
    query = select(
        *columns,
        func.count(),
        func.coalesce(func.sum(seconds), 0.0),
        *(func.sum(case((seconds <= bound, 1), else_=0)) for bound in bounds),
    )
    query = query.select_from(join[0].join(join[1])) if join else query
    query = query.where(where, seconds.is_not(None), seconds >= 0).group_by(*columns)
    found = []
    for row in connection.execute(query).all():
        values = list(row)
        names = {name: str(values[i]) for i, (name, _c) in enumerate(labels)}
        count, total, *cumulative = values[len(labels) :]
        found.append(
            (
                names,
                Histogram(bounds, tuple(int(n or 0) for n in cumulative), int(count), float(total)),
            )
        )
    return sorted(found, key=lambda item: sorted(item[0].items()))


def turnaround(connection: Connection) -> list[tuple[Labels, Histogram]]:
    """Per pipeline: the study's last instance received to the job delivered (jobs of an
    earlier generation of a study that got instances later are left out)."""
    seconds = seconds_between(connection, Job.delivered_at, Study.last_received_at)
    return _histograms(
        connection,
        seconds,
        [("pipeline", Job.pipeline)],
        and_(Job.state == JobState.DELIVERED, Job.delivered_at.is_not(None)),
        TURNAROUND_BOUNDS,
        join=(Job.__table__, Study.__table__),
    )


def job_duration(connection: Connection) -> list[tuple[Labels, Histogram]]:
    """Per pipeline and end state (delivered, failed): started to finished."""
    seconds = seconds_between(connection, Job.finished_at, Job.started_at)
    return _histograms(
        connection,
        seconds,
        [("pipeline", Job.pipeline), ("state", Job.state)],
        Job.state.in_([JobState.DELIVERED, JobState.FAILED]),
        JOB_DURATION_BOUNDS,
    )


def delivery_latency(connection: Connection) -> list[tuple[Labels, Histogram]]:
    """Per destination: an object queued to delivered (retries included)."""
    seconds = seconds_between(connection, Delivery.delivered_at, Delivery.created_at)
    return _histograms(
        connection,
        seconds,
        [("destination", Delivery.destination)],
        Delivery.state == DeliveryState.DELIVERED,
        DELIVERY_LATENCY_BOUNDS,
    )
