"""The model watch as Prometheus families, for the gateway's /metrics:

    pacs_gateway_model_drift{pipeline,version,model,statistic} 1 | 0
        1 when the latest day checked, today or yesterday (UTC), lies outside the control
        limits for that statistic (deploy/prometheus/alerts.yml alerts on it).
    pacs_gateway_model_statistic{pipeline,version,model,statistic} value
        that day's value.

Nothing is exported for a version still learning its baseline or that has not run since
yesterday; each scrape reads at most the baseline's N jobs and two days of jobs per
version."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection

from gateway.monitoring.config import ModelWatchSettings
from gateway.monitoring.watch import DayStatus, watch_all
from gateway.pipelines.registry import PipelineRegistry
from gateway.web.exposition import Family, render

RECENT_DAYS = 2


def model_drift_families(
    connection: Connection,
    settings: ModelWatchSettings,
    now: datetime,
    registry: PipelineRegistry | None = None,
) -> list[Family]:
    """Both gauges (declared even without a sample)."""
    drift = Family(
        "pacs_gateway_model_drift",
        "gauge",
        "1 when the latest day checked (today or yesterday, UTC) lies outside the control "
        "limits learned from the pipeline version's first studies.",
    )
    values = Family("pacs_gateway_model_statistic", "gauge", "The value of that day's statistic.")
    recent = settings.model_copy(update={"days": RECENT_DAYS})
    for watch in watch_all(connection, recent, now, registry):
        day = watch.latest_checked
        if day is None or day.status is DayStatus.BASELINE:
            continue
        key = watch.key
        for statistic, value in sorted(day.statistics.values.items()):
            if statistic not in watch.limits:
                continue
            labels = {
                "pipeline": key.pipeline,
                "version": key.version or "",
                "model": key.model_key,
                "statistic": statistic.value,
            }
            drift.samples.append((labels, 1.0 if statistic in day.outside else 0.0))
            values.samples.append((labels, value))
    return [drift, values]


def model_drift_text(
    connection: Connection,
    settings: ModelWatchSettings,
    now: datetime,
    registry: PipelineRegistry | None = None,
) -> str:
    """The same families in the text format."""
    return render(model_drift_families(connection, settings, now, registry))
