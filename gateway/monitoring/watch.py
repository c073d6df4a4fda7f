"""The model watch of every pipeline version: its days in the window, each checked against
the control limits of its baseline (the version's first N studies). A day counts only the
studies after the baseline; a day of baseline studies alone is shown, never flagged."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection

from gateway.monitoring.config import ModelWatchSettings
from gateway.monitoring.limits import Limit, learn_limits, outside_limits
from gateway.monitoring.source import (
    VersionKey,
    baseline_records,
    records_since,
    version_keys,
)
from gateway.monitoring.statistics import DayStatistics, Statistic, by_day, day_statistics
from gateway.pipelines.description import PipelineDescription
from gateway.pipelines.registry import PipelineRegistry


class DayStatus(enum.StrEnum):
    BASELINE = "baseline"  # learning: the day's studies are the baseline's
    OK = "ok"  # green: every statistic within its limits
    AMBER = "amber"  # a statistic outside its limits


@dataclass(frozen=True)
class DayRow:
    statistics: DayStatistics
    status: DayStatus
    outside: tuple[Statistic, ...]
    bands: dict[Statistic, tuple[float, float]]
    """The limits for this day's counts, per statistic that has limits and a value."""


@dataclass(frozen=True)
class VersionWatch:
    key: VersionKey
    studies: int
    """Every study the version ran (all time)."""
    baseline_studies: int
    """How many of its first studies the limits come from (below N: still learning)."""
    learned: bool
    limits: dict[Statistic, Limit]
    days: list[DayRow]
    """Oldest first, within the window."""

    @property
    def amber_days(self) -> list[DayRow]:
        return [d for d in self.days if d.status is DayStatus.AMBER]

    @property
    def latest_checked(self) -> DayRow | None:
        checked = [d for d in self.days if d.status is not DayStatus.BASELINE]
        return checked[-1] if checked else None


def window_start(settings: ModelWatchSettings, now: datetime) -> datetime:
    """Midnight (UTC) of the first day shown: `settings.days` days up to today."""
    first = (now - timedelta(days=settings.days - 1)).date()
    return datetime.combine(first, datetime.min.time(), tzinfo=now.tzinfo)


def _description(registry: PipelineRegistry | None, key: VersionKey) -> PipelineDescription | None:
    if registry is None or key.pipeline not in registry:
        return None
    return registry.get(key.pipeline).description


def watch_version(
    connection: Connection,
    key: VersionKey,
    studies: int,
    settings: ModelWatchSettings,
    now: datetime,
    registry: PipelineRegistry | None = None,
) -> VersionWatch:
    description = _description(registry, key)
    baseline = baseline_records(connection, key, description, settings.baseline_studies)
    learned = len(baseline) >= settings.baseline_studies
    limits = learn_limits(baseline) if learned else {}
    in_baseline = {r.job_id for r in baseline}
    days: list[DayRow] = []
    window = records_since(connection, key, description, window_start(settings, now))
    for day, records in by_day(window).items():
        watched = [r for r in records if r.job_id not in in_baseline]
        if not learned or not watched:
            days.append(DayRow(day_statistics(day, records), DayStatus.BASELINE, (), {}))
            continue
        statistics = day_statistics(day, watched)
        outside = tuple(outside_limits(statistics, limits, settings.sigma))
        bands = {
            s: limits[s].band(statistics.counts[s], settings.sigma)
            for s in statistics.values
            if s in limits
        }
        status = DayStatus.AMBER if outside else DayStatus.OK
        days.append(DayRow(statistics, status, outside, bands))
    return VersionWatch(key, studies, len(baseline), learned, limits, days)


def watch_all(
    connection: Connection,
    settings: ModelWatchSettings,
    now: datetime,
    registry: PipelineRegistry | None = None,
) -> list[VersionWatch]:
    """Every pipeline version that ran within the window, by pipeline, latest version
    first."""
    start = window_start(settings, now)
    return [
        watch_version(connection, key, studies, settings, now, registry)
        for key, studies, latest in version_keys(connection)
        if latest >= start
    ]
