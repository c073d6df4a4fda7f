"""Daily statistics of one pipeline version from its studies: positive rate, score (mean and
quantiles), findings per study, failure rate, analysis latency. Pure: records in, numbers out.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from gateway.monitoring.outcome import StudyOutcome


class Statistic(enum.StrEnum):
    """What is watched per day; each has control limits once the baseline is learned."""

    POSITIVE_RATE = "positive_rate"
    SCORE_MEAN = "score_mean"
    FINDINGS_MEAN = "findings_mean"
    FAILURE_RATE = "failure_rate"
    LATENCY_MEAN = "latency_mean"


PROPORTIONS = (Statistic.POSITIVE_RATE, Statistic.FAILURE_RATE)
"""Statistics that are shares of studies (0..1): their limits come from a binomial."""

TITLES = {
    Statistic.POSITIVE_RATE: "Positive rate",
    Statistic.SCORE_MEAN: "Mean score",
    Statistic.FINDINGS_MEAN: "Findings per study",
    Statistic.FAILURE_RATE: "Failure rate",
    Statistic.LATENCY_MEAN: "Analysis seconds",
}


@dataclass(frozen=True)
class StudyRecord:
    """One job of the pipeline version: its study's outcome, or that the pipeline failed."""

    job_id: int
    day: date
    failed: bool
    outcome: StudyOutcome | None
    """None when the job failed (or its summary holds no findings)."""
    latency_s: float | None
    """Reading, preprocessing, inference and postprocessing (the job's stage seconds)."""


def values_of(statistic: Statistic, records: Iterable[StudyRecord]) -> list[float]:
    """The per-study values whose mean is the statistic (studies that lack it left out)."""
    out: list[float] = []
    for r in records:
        if statistic is Statistic.FAILURE_RATE:
            out.append(1.0 if r.failed else 0.0)
        elif statistic is Statistic.LATENCY_MEAN:
            if r.latency_s is not None and not r.failed:
                out.append(r.latency_s)
        elif r.outcome is not None and not r.failed:
            if statistic is Statistic.POSITIVE_RATE and r.outcome.positive is not None:
                out.append(1.0 if r.outcome.positive else 0.0)
            elif statistic is Statistic.SCORE_MEAN and r.outcome.score is not None:
                out.append(r.outcome.score)
            elif statistic is Statistic.FINDINGS_MEAN:
                out.append(float(r.outcome.findings))
    return out


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between order statistics (numpy's default), None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class DayStatistics:
    day: date
    studies: int
    values: dict[Statistic, float]
    """Mean per statistic over the studies that have it (absent: none had it)."""
    counts: dict[Statistic, int]
    """How many studies each mean is over (the control limits narrow with it)."""
    score_quantiles: tuple[float, float, float] | None
    """10th, 50th and 90th percentile of the study scores."""


def day_statistics(day: date, records: Sequence[StudyRecord]) -> DayStatistics:
    values: dict[Statistic, float] = {}
    counts: dict[Statistic, int] = {}
    for statistic in Statistic:
        found = values_of(statistic, records)
        if found:
            values[statistic] = sum(found) / len(found)
            counts[statistic] = len(found)
    scores = values_of(Statistic.SCORE_MEAN, records)
    quantiles = None
    if scores:
        q10, q50, q90 = (quantile(scores, q) for q in (0.1, 0.5, 0.9))
        assert q10 is not None and q50 is not None and q90 is not None
        quantiles = (q10, q50, q90)
    return DayStatistics(day, len(records), values, counts, quantiles)


def by_day(records: Iterable[StudyRecord]) -> dict[date, list[StudyRecord]]:
    days: dict[date, list[StudyRecord]] = {}
    for record in records:
        days.setdefault(record.day, []).append(record)
    return dict(sorted(days.items()))
