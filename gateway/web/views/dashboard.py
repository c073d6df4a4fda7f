"""The dashboard: what arrived, what ran, what failed, and whether the workers and Triton are
there."""

from __future__ import annotations

from flask import Blueprint, render_template

from gateway.audit import utcnow
from gateway.web import probes, queries
from gateway.web.context import web_context
from gateway.web.security import requires_role
from gateway.web.users import Role

blueprint = Blueprint("dashboard", __name__)


@blueprint.route("/")
@requires_role(Role.VIEWER)
def index() -> str:
    context = web_context()
    settings = context.settings
    with context.engine.connect() as connection:
        counts = queries.counts(connection, utcnow())
        failed_jobs = queries.recent_failed_jobs(connection)
        failed_deliveries = queries.recent_failed_deliveries(connection)
    problems: list[str] = []
    try:
        probes.check_triton(settings)
    except probes.ProbeError as exc:
        problems.append(f"Triton: {exc}")
    try:
        probes.check_broker(settings)
    except probes.ProbeError as exc:
        problems.append(f"Broker: {exc}")
    else:
        workers = probes.count_workers(settings)
        if workers == 0:
            problems.append("No worker answered: queued jobs will wait.")
    return render_template(
        "dashboard.html",
        counts=counts,
        failed_jobs=failed_jobs,
        failed_deliveries=failed_deliveries,
        problems=problems,
    )
