"""What /metrics exports: counts and states from the database, duration histograms
(histograms.py), each part's health from the health grid, spool space and each
destination's activity. Names start with `pacs_gateway_`; deploy/prometheus/alerts.yml and
deploy/grafana/pacs-gateway.json use them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine

from gateway.health.destinations import destination_activity
from gateway.health.grid import HealthGrid
from gateway.health.spool import SpoolUsage
from gateway.health.workers import SUMMARY_NAME
from gateway.monitoring.metrics import model_drift_families
from gateway.settings import GatewaySettings
from gateway.web import histograms, queries
from gateway.web.exposition import Family


@dataclass(frozen=True)
class Sources:
    settings: GatewaySettings
    connection: Connection
    now: datetime
    grid: HealthGrid
    spool: SpoolUsage


def counts_and_states(src: Sources) -> list[Family]:
    connection = src.connection
    counts = queries.counts(connection, src.now)
    jobs = queries.jobs_by_state(connection)
    deliveries = queries.deliveries_by_state(connection)
    stages = queries.mean_stage_seconds(connection)
    return [
        Family(
            "pacs_gateway_instances_received_total",
            "counter",
            "DICOM instances stored.",
            [({}, counts.instances_total)],
        ),
        Family(
            "pacs_gateway_studies_total",
            "counter",
            "Studies received.",
            [({}, counts.studies_total)],
        ),
        Family(
            "pacs_gateway_jobs",
            "gauge",
            "Pipeline jobs by state.",
            [({"state": s}, n) for s, n in jobs.items()],
        ),
        Family(
            "pacs_gateway_queue_depth", "gauge", "Jobs waiting in the queue.", [({}, counts.queued)]
        ),
        Family(
            "pacs_gateway_job_stage_seconds_mean",
            "gauge",
            "Mean seconds per job stage over the most recent 1000 jobs.",
            [({"stage": s}, v) for s, v in stages.items()],
        ),
        Family(
            "pacs_gateway_deliveries",
            "gauge",
            "Result deliveries by state.",
            [({"state": s}, n) for s, n in deliveries.items()],
        ),
        Family(
            "pacs_gateway_delivery_failures_total",
            "counter",
            "Deliveries failed for good, ever (a retry does not lower it).",
            [({}, queries.deliveries_failed_for_good(connection))],
        ),
    ]


def duration_histograms(src: Sources) -> list[Family]:
    connection = src.connection
    return [
        Family(
            "pacs_gateway_job_turnaround_seconds",
            "histogram",
            "Seconds from a study's last instance received to its job delivered, per pipeline.",
            histograms=histograms.turnaround(connection),
        ),
        Family(
            "pacs_gateway_job_duration_seconds",
            "histogram",
            "Seconds from a job started to finished, per pipeline and end state.",
            histograms=histograms.job_duration(connection),
        ),
        Family(
            "pacs_gateway_delivery_latency_seconds",
            "histogram",
            "Seconds from a result object queued to delivered, per destination.",
            histograms=histograms.delivery_latency(connection),
        ),
    ]


def part_health(src: Sources) -> list[Family]:
    grid = src.grid
    answering = [
        p
        for p in grid.of("worker")
        if p.name != SUMMARY_NAME
        and p.heartbeat_at is not None
        and p.heartbeat_at == grid.checked_at
    ]
    return [
        Family(
            "pacs_gateway_part_health",
            "gauge",
            "Health of each part: 0 green, 1 amber, 2 red (the dashboard's grid).",
            [({"part": p.part, "name": p.name}, p.level.code) for p in grid.parts],
        ),
        Family(
            "pacs_gateway_part_heartbeat_age_seconds",
            "gauge",
            "Seconds since each part's last sign of life.",
            [
                ({"part": p.part, "name": p.name}, (src.now - p.heartbeat_at).total_seconds())
                for p in grid.parts
                if p.heartbeat_at is not None
            ],
        ),
        Family(
            "pacs_gateway_workers_answering",
            "gauge",
            "Celery workers that answered a ping.",
            [({}, len(answering))],
        ),
    ]


def spool_space(src: Sources) -> list[Family]:
    spool = src.spool
    return [
        Family(
            "pacs_gateway_spool_free_bytes",
            "gauge",
            "Free bytes on the spool's file system.",
            [({}, spool.free_bytes)],
        ),
        Family(
            "pacs_gateway_spool_size_bytes",
            "gauge",
            "Size of the spool's file system in bytes.",
            [({}, spool.total_bytes)],
        ),
        Family(
            "pacs_gateway_spool_min_free_bytes",
            "gauge",
            "Below this much free space C-STORE is refused (storage.min_free_mb).",
            [({}, spool.min_free_bytes)],
        ),
    ]


def destinations(src: Sources) -> list[Family]:
    activity = sorted(destination_activity(src.connection).values(), key=lambda a: a.name)
    return [
        Family(
            "pacs_gateway_destination_queued",
            "gauge",
            "Result objects waiting for each destination.",
            [({"destination": a.name}, a.queued) for a in activity],
        ),
        Family(
            "pacs_gateway_destination_last_success_timestamp_seconds",
            "gauge",
            "Unix time of the last object each destination confirmed.",
            [
                ({"destination": a.name}, a.last_success.timestamp())
                for a in activity
                if a.last_success
            ],
        ),
        Family(
            "pacs_gateway_destination_last_failure_timestamp_seconds",
            "gauge",
            "Unix time of the last failed attempt to each destination.",
            [
                ({"destination": a.name}, a.last_failure.timestamp())
                for a in activity
                if a.last_failure
            ],
        ),
    ]


def model_watch(src: Sources) -> list[Family]:
    """pacs_gateway_model_drift and _statistic (gateway/monitoring/metrics.py)."""
    settings = src.settings
    return model_drift_families(
        src.connection, settings.monitoring, src.now, settings.pipeline_registry()
    )


# Each builder adds its families.
BUILDERS: tuple[Callable[[Sources], list[Family]], ...] = (
    counts_and_states,
    duration_histograms,
    part_health,
    spool_space,
    destinations,
    model_watch,
)


def metric_families(
    settings: GatewaySettings, engine: Engine, now: datetime, grid: HealthGrid, spool: SpoolUsage
) -> list[Family]:
    with engine.connect() as connection:
        src = Sources(settings, connection, now, grid, spool)
        return [family for build in BUILDERS for family in build(src)]
