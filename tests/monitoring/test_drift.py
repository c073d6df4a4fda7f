"""The model watch on job rows in the real databases: limits learned from a version's first N
studies, days within them green, a day whose scores shift (a scanner protocol change) amber,
and the Prometheus gauge that the alert rule watches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import Engine

from gateway.monitoring.config import ModelWatchSettings
from gateway.monitoring.limits import learn_limits
from gateway.monitoring.metrics import model_drift_text
from gateway.monitoring.source import VersionKey, baseline_records
from gateway.monitoring.statistics import Statistic
from gateway.monitoring.watch import DayStatus, VersionWatch, watch_all
from tests.monitoring.job_rows import MODEL_KEY, add_jobs

NOW = datetime(2026, 12, 1, 18, 0, tzinfo=UTC)
WATCH = ModelWatchSettings(baseline_studies=100, sigma=3.0, days=30)
PER_DAY = 20


def midnight(days_ago: int) -> datetime:
    return datetime.combine((NOW - timedelta(days=days_ago)).date(), datetime.min.time(), UTC)


def scores(rng: np.random.Generator, mean: float, n: int = PER_DAY) -> list[float]:
    return [float(v) for v in np.clip(rng.normal(mean, 0.12, n), 0.01, 0.99)]


def only(engine: Engine) -> VersionWatch:
    with engine.connect() as connection:
        (watch,) = watch_all(connection, WATCH, NOW)
    return watch


def test_shifted_scores_flag_the_day_amber_and_days_within_stay_green(engine: Engine) -> None:
    rng = np.random.default_rng(15)
    for days_ago in range(12, 7, -1):  # 5 days x 20 = the baseline's 100 studies
        add_jobs(engine, midnight(days_ago), scores(rng, 0.30))
    for days_ago in range(7, 1, -1):  # the same distribution: within the limits
        add_jobs(engine, midnight(days_ago), scores(rng, 0.30))
    add_jobs(engine, midnight(1), scores(rng, 0.55))  # the protocol change

    watch = only(engine)
    assert watch.learned and watch.baseline_studies == 100 and watch.studies == 240
    status = {d.statistics.day: d.status for d in watch.days}
    assert [status[midnight(n).date()] for n in range(12, 7, -1)] == [DayStatus.BASELINE] * 5
    assert [status[midnight(n).date()] for n in range(7, 1, -1)] == [DayStatus.OK] * 6, [
        (d.statistics.day, d.outside) for d in watch.days
    ]
    (amber,) = watch.amber_days
    assert amber.statistics.day == midnight(1).date()
    assert Statistic.SCORE_MEAN in amber.outside and Statistic.POSITIVE_RATE in amber.outside
    low, high = amber.bands[Statistic.SCORE_MEAN]
    assert amber.statistics.values[Statistic.SCORE_MEAN] > high > 0.3 > low
    assert Statistic.FAILURE_RATE not in amber.outside  # no failures: that one stays green
    assert amber.statistics.score_quantiles is not None
    assert amber.statistics.score_quantiles[1] > 0.45  # the median moved too

    with engine.connect() as connection:
        lines = model_drift_text(connection, WATCH, NOW).splitlines()
    labels = f'pipeline="lung_nodules",version="1",model="{MODEL_KEY}"'
    assert f'pacs_gateway_model_drift{{{labels},statistic="score_mean"}} 1' in lines
    assert f'pacs_gateway_model_drift{{{labels},statistic="failure_rate"}} 0' in lines
    assert "# TYPE pacs_gateway_model_drift gauge" in lines


def test_limits_come_from_the_first_n_studies_only(engine: Engine) -> None:
    rng = np.random.default_rng(16)
    for days_ago in range(10, 5, -1):
        add_jobs(engine, midnight(days_ago), scores(rng, 0.30))
    before = only(engine).limits
    key = VersionKey("lung_nodules", "1", MODEL_KEY)
    with engine.connect() as connection:
        first = baseline_records(connection, key, None, 100)
    assert before == learn_limits(first)

    # 200 later studies with a much higher score: the limits must not follow them, or a
    # slow drift would teach the chart to accept itself.
    for days_ago in range(5, 0, -1):
        add_jobs(engine, midnight(days_ago), scores(rng, 0.70, 40))
    after = only(engine)
    assert after.limits == before
    assert after.limits[Statistic.SCORE_MEAN].centre < 0.35
    assert len(after.amber_days) == 5


def test_a_version_learning_its_baseline_flags_nothing(engine: Engine) -> None:
    rng = np.random.default_rng(17)
    add_jobs(engine, midnight(3), scores(rng, 0.30, 60))
    add_jobs(engine, midnight(2), scores(rng, 0.90, 30))  # would be amber with limits
    watch = only(engine)
    assert not watch.learned and watch.baseline_studies == 90 and watch.limits == {}
    assert {d.status for d in watch.days} == {DayStatus.BASELINE}
    with engine.connect() as connection:
        lines = model_drift_text(connection, WATCH, NOW).splitlines()
    assert not [line for line in lines if not line.startswith("#")]


def test_failures_flag_the_day_one_failure_does_not(engine: Engine) -> None:
    rng = np.random.default_rng(18)
    for days_ago in range(9, 4, -1):
        add_jobs(engine, midnight(days_ago), scores(rng, 0.30))  # no failure in the baseline
    add_jobs(engine, midnight(3), scores(rng, 0.30, PER_DAY - 1), failed=1)
    add_jobs(engine, midnight(2), scores(rng, 0.30, PER_DAY - 6), failed=6)
    watch = only(engine)
    by_day = {d.statistics.day: d for d in watch.days}
    one, six = by_day[midnight(3).date()], by_day[midnight(2).date()]
    assert one.status is DayStatus.OK, one.outside
    assert six.outside == (Statistic.FAILURE_RATE,)
    assert six.statistics.values[Statistic.FAILURE_RATE] == 6 / PER_DAY


def test_versions_are_watched_apart(engine: Engine) -> None:
    rng = np.random.default_rng(19)
    for days_ago in range(9, 4, -1):
        add_jobs(engine, midnight(days_ago), scores(rng, 0.30))
    # The candidate version scores higher from its first study on: its own baseline.
    for days_ago in range(9, 1, -1):
        add_jobs(engine, midnight(days_ago), scores(rng, 0.60), version="2")
    with engine.connect() as connection:
        watches = {w.key.version: w for w in watch_all(connection, WATCH, NOW)}
    assert set(watches) == {"1", "2"}
    assert watches["2"].limits[Statistic.SCORE_MEAN].centre > 0.5
    assert watches["2"].amber_days == [] and watches["1"].amber_days == []


def test_a_day_counts_only_the_studies_after_the_baseline(engine: Engine) -> None:
    rng = np.random.default_rng(20)
    for days_ago in range(9, 5, -1):
        add_jobs(engine, midnight(days_ago), scores(rng, 0.30))  # 80
    # Day 5: 20 baseline studies first, then 20 shifted ones after the baseline is complete.
    add_jobs(engine, midnight(5), scores(rng, 0.30))
    add_jobs(engine, midnight(5) + timedelta(hours=12), scores(rng, 0.60))
    watch = only(engine)
    (day,) = [d for d in watch.days if d.statistics.day == midnight(5).date()]
    assert day.statistics.studies == PER_DAY
    assert day.status is DayStatus.AMBER
    assert day.statistics.values[Statistic.SCORE_MEAN] > 0.5
