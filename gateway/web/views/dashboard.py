"""The dashboard: the health grid (every listener process, worker, Triton and each model,
the broker, the database, each destination, the spool's disk), charts of the last 24 hours
or 7 days, what arrived, what ran, what failed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, render_template, request
from sqlalchemy import Connection

from gateway.audit import utcnow
from gateway.health.grid import HealthGrid, collect
from gateway.health.status import Level, describe_age, seconds_since
from gateway.health.workers import NO_WORKER, SUMMARY_NAME
from gateway.web import activity, charts, queries
from gateway.web.context import web_context
from gateway.web.security import requires_role
from gateway.web.users import Role

blueprint = Blueprint("dashboard", __name__)


def banners(grid: HealthGrid) -> list[str]:
    """One line for each red part that stops every job: Triton, the broker, no worker."""
    lines = []
    for part in grid.parts:
        if part.level is not Level.RED:
            continue
        if part.part == "triton":
            lines.append(f"Triton: {part.summary}")
        elif part.part == "broker":
            lines.append(f"Broker: {part.summary}")
        elif part.part == "worker" and part.name == SUMMARY_NAME and part.summary == NO_WORKER:
            lines.append(NO_WORKER)
    return lines


def render_charts(connection: Connection, window: activity.Window, label: str) -> dict[str, Any]:
    received = activity.studies_received(connection, window)
    finished = activity.jobs_finished(connection, window)
    depth = activity.queue_depth(connection, window)
    turnaround = activity.turnaround(connection, window.start)
    return {
        "studies": charts.hourly_bars(
            "chart-studies",
            f"Studies received per hour, {label}",
            window,
            [charts.Series("studies", "studies", received)],
        ),
        "jobs": charts.hourly_bars(
            "chart-jobs",
            f"Jobs done and failed per hour, {label}",
            window,
            [
                charts.Series("delivered", "done", finished["delivered"]),
                charts.Series("failed", "failed", finished["failed"]),
            ],
        ),
        "queue": charts.hourly_bars(
            "chart-queue",
            f"Jobs waiting at the end of each hour, {label}",
            window,
            [charts.Series("queued", "waiting", depth)],
        ),
        "turnaround": charts.turnaround_bars(
            "chart-turnaround",
            f"Turnaround (last instance to delivered) p50 and p95 per pipeline, {label}",
            turnaround,
        ),
        "turnaround_rows": turnaround,
    }


@blueprint.route("/")
@requires_role(Role.VIEWER)
def index() -> str:
    context = web_context()
    now = utcnow()
    range_key = request.args.get("range", "24h")
    if range_key not in activity.RANGES:
        range_key = "24h"
    window = activity.Window.ending(now, activity.RANGES[range_key])
    label = "last 24 hours" if range_key == "24h" else "last 7 days"
    grid = collect(context.settings, context.engine, now)
    with context.engine.connect() as connection:
        counts = queries.counts(connection, now)
        failed_jobs = queries.recent_failed_jobs(connection)
        failed_deliveries = queries.recent_failed_deliveries(connection)
        chart = render_charts(connection, window, label)

    def age(moment: datetime | None) -> str:
        seconds = seconds_since(moment, now)
        return "never" if seconds is None else f"{describe_age(max(seconds, 0))} ago"

    return render_template(
        "dashboard.html",
        counts=counts,
        failed_jobs=failed_jobs,
        failed_deliveries=failed_deliveries,
        problems=banners(grid),
        grid=grid,
        Level=Level,
        age=age,
        charts=chart,
        range_key=range_key,
        ranges=activity.RANGES,
    )
