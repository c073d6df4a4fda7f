"""Control limits learned from a pipeline version's first studies (its baseline), and the
check of a day against them: a Shewhart chart for the mean of the day's n studies,
centre +- sigma * sd / sqrt(n). Shares use a binomial sd from the baseline's share with one
success and one failure added (so a baseline with no failures does not flag every failure);
means use the baseline's sample sd, never below a small floor (a constant baseline still
tolerates rounding)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.monitoring.statistics import (
    PROPORTIONS,
    DayStatistics,
    Statistic,
    StudyRecord,
    values_of,
)

SD_FLOOR = {
    Statistic.SCORE_MEAN: 0.01,
    Statistic.FINDINGS_MEAN: 0.1,
    Statistic.LATENCY_MEAN: 0.05,
}
"""The smallest per-study sd a mean's limits assume (score, findings, seconds)."""


@dataclass(frozen=True)
class Limit:
    """One statistic's baseline: centre and per-study sd, from `studies` studies."""

    statistic: Statistic
    centre: float
    sd: float
    studies: int

    def band(self, n: int, sigma: float) -> tuple[float, float]:
        """Lower and upper limit for the mean of n studies."""
        half = sigma * self.sd / math.sqrt(max(n, 1))
        low, high = self.centre - half, self.centre + half
        if self.statistic in PROPORTIONS:
            return max(0.0, low), min(1.0, high)
        return max(0.0, low), high

    def outside(self, value: float, n: int, sigma: float) -> bool:
        low, high = self.band(n, sigma)
        return value < low or value > high


def learn_limits(baseline: Sequence[StudyRecord]) -> dict[Statistic, Limit]:
    """A limit per statistic the baseline studies have (none for a statistic they lack,
    e.g. a score for a pipeline without classification)."""
    limits: dict[Statistic, Limit] = {}
    for statistic in Statistic:
        values = values_of(statistic, baseline)
        if not values:
            continue
        n = len(values)
        centre = sum(values) / n
        if statistic in PROPORTIONS:
            adjusted = (sum(values) + 1.0) / (n + 2.0)
            sd = math.sqrt(adjusted * (1.0 - adjusted))
        else:
            variance = sum((v - centre) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
            sd = max(math.sqrt(variance), SD_FLOOR[statistic])
        limits[statistic] = Limit(statistic, centre, sd, n)
    return limits


def outside_limits(
    day: DayStatistics, limits: dict[Statistic, Limit], sigma: float
) -> list[Statistic]:
    """The statistics of the day that lie outside their limits."""
    return [
        statistic
        for statistic, value in day.values.items()
        if statistic in limits and limits[statistic].outside(value, day.counts[statistic], sigma)
    ]
