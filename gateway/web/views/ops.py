"""Operations endpoints: /healthz (the process answers), /readyz (the database answers;
broker and Triton reported), /metrics (Prometheus text, gateway/web/prometheus.py). /healthz
and /readyz are public; /metrics is public unless `web.metrics_public` is off. None of them
shows patient data."""

from __future__ import annotations

from flask import Blueprint, Response, abort

from gateway.audit import utcnow
from gateway.health.grid import collect
from gateway.health.spool import spool_usage
from gateway.web import probes
from gateway.web.context import web_context
from gateway.web.exposition import render
from gateway.web.prometheus import metric_families
from gateway.web.security import current_user, public

blueprint = Blueprint("ops", __name__)


@blueprint.route("/healthz")
@public
def healthz() -> Response:
    return Response("ok\n", mimetype="text/plain")


@blueprint.route("/readyz")
@public
def readyz() -> Response:
    """Ready while the database answers: what this process needs to serve its pages and take
    STOW-RS. The broker and Triton are reported, never required: a web pod out of service
    while the AI side is down would refuse studies that the gateway can keep (their jobs wait;
    the dashboard's health grid shows why)."""
    context = web_context()
    lines: list[str] = []
    ready = True
    checks = (
        ("database", True, lambda: probes.check_database(context.engine)),
        ("broker", False, lambda: probes.check_broker(context.settings)),
        ("triton", False, lambda: probes.check_triton(context.settings)),
    )
    for name, required, check in checks:
        try:
            check()
        except probes.ProbeError as exc:
            ready = ready and not required
            lines.append(f"{name}: failed: {exc}" + ("" if required else " (not required)"))
        else:
            lines.append(f"{name}: ok")
    return Response("\n".join(lines) + "\n", status=200 if ready else 503, mimetype="text/plain")


@blueprint.route("/metrics")
@public
def metrics() -> Response:
    """Counts, duration histograms, each part's health (the dashboard's grid: this asks the
    workers and Triton, about a second), spool space, destinations, model drift. No patient
    data."""
    context = web_context()
    if not context.settings.web.metrics_public and current_user() is None:
        abort(401)
    now = utcnow()
    grid = collect(context.settings, context.engine, now)
    settings = context.settings
    families = metric_families(settings, context.engine, now, grid, spool_usage(settings))
    return Response(render(families), mimetype="text/plain; version=0.0.4")
