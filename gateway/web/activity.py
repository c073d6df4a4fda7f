"""What happened hour by hour, for the dashboard's charts: studies received, jobs delivered
and failed, the queue's depth (rebuilt from each job's times), and turnaround percentiles
per pipeline. All from the rows the listener, router and workers write."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, and_, func, or_, select

from gateway.health.status import as_utc
from gateway.models import Job, JobState, Study

HOUR = timedelta(hours=1)
RANGES = {"24h": 24, "7d": 24 * 7}


@dataclass(frozen=True)
class Window:
    """Whole hours, oldest first; the last one holds `now`."""

    starts: tuple[datetime, ...]
    now: datetime

    @classmethod
    def ending(cls, now: datetime, hours: int) -> Window:
        last = as_utc(now).replace(minute=0, second=0, microsecond=0)
        return cls(tuple(last - HOUR * (hours - 1 - i) for i in range(hours)), as_utc(now))

    @property
    def start(self) -> datetime:
        return self.starts[0]

    def index(self, moment: datetime | None) -> int | None:
        if moment is None:
            return None
        offset = as_utc(moment) - self.start
        index = math.floor(offset / HOUR)
        return index if 0 <= index < len(self.starts) and as_utc(moment) <= self.now else None

    def ends(self) -> list[datetime]:
        """Where each hour's gauge is read: its end, or now for the current hour."""
        return [min(start + HOUR, self.now) for start in self.starts]


def _histogram(window: Window, moments: list[datetime | None]) -> list[int]:
    counts = [0] * len(window.starts)
    for moment in moments:
        index = window.index(moment)
        if index is not None:
            counts[index] += 1
    return counts


def studies_received(connection: Connection, window: Window) -> list[int]:
    """Studies by the hour their first instance arrived."""
    moments = connection.execute(
        select(Study.first_received_at).where(Study.first_received_at >= window.start)
    ).scalars()
    return _histogram(window, list(moments))


def jobs_finished(connection: Connection, window: Window) -> dict[str, list[int]]:
    """Jobs delivered and jobs failed, by the hour they finished."""
    rows = connection.execute(
        select(Job.state, Job.finished_at).where(
            Job.finished_at >= window.start, Job.state.in_([JobState.DELIVERED, JobState.FAILED])
        )
    ).all()
    by_state: dict[str, list[datetime | None]] = defaultdict(list)
    for state, finished_at in rows:
        by_state[str(state)].append(finished_at)
    return {
        state.value: _histogram(window, by_state[state.value])
        for state in (JobState.DELIVERED, JobState.FAILED)
    }


def queue_depth(connection: Connection, window: Window) -> list[int]:
    """Jobs waiting at the end of each hour: a job waits from its creation until it starts
    (or finishes without starting, as a job no pipeline could take)."""
    left = func.coalesce(Job.started_at, Job.finished_at)
    rows = connection.execute(
        select(Job.created_at, Job.started_at, Job.finished_at).where(
            Job.created_at <= window.now,
            or_(left.is_(None), left >= window.start),
        )
    ).all()
    spans = [
        (as_utc(created), as_utc(started or finished) if (started or finished) else None)
        for created, started, finished in rows
    ]
    return [
        sum(1 for created, gone in spans if created <= end and (gone is None or gone > end))
        for end in window.ends()
    ]


@dataclass(frozen=True)
class Turnaround:
    pipeline: str
    jobs: int
    p50_s: float
    p95_s: float


def percentile(ordered: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    if not ordered:
        raise ValueError("expected at least one value, found none")
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def turnaround(connection: Connection, since: datetime) -> list[Turnaround]:
    """Per pipeline, over jobs delivered since `since`: the study's last instance received to
    the job delivered (a job of an earlier generation, its study updated later, is left
    out), p50 and p95."""
    rows = connection.execute(
        select(Job.pipeline, Job.delivered_at, Study.last_received_at)
        .join(Study, Study.id == Job.study_id)
        .where(and_(Job.state == JobState.DELIVERED, Job.delivered_at >= since))
    ).all()
    by_pipeline: dict[str, list[float]] = defaultdict(list)
    for pipeline, delivered, last_received in rows:
        seconds = (as_utc(delivered) - as_utc(last_received)).total_seconds()
        if seconds >= 0:
            by_pipeline[pipeline].append(seconds)
    return [
        Turnaround(name, len(values), percentile(values, 50), percentile(values, 95))
        for name, values in sorted((n, sorted(v)) for n, v in by_pipeline.items())
    ]
