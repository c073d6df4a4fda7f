"""Operations endpoints: /healthz (the process answers), /readyz (database, broker, Triton),
/metrics (Prometheus text). /healthz and /readyz are public; /metrics is public unless
`web.metrics_public` is off. None of them shows patient data."""

from __future__ import annotations

from flask import Blueprint, Response, abort

from gateway.audit import utcnow
from gateway.web import probes, queries
from gateway.web.context import web_context
from gateway.web.security import current_user, public

blueprint = Blueprint("ops", __name__)


@blueprint.route("/healthz")
@public
def healthz() -> Response:
    return Response("ok\n", mimetype="text/plain")


@blueprint.route("/readyz")
@public
def readyz() -> Response:
    context = web_context()
    lines: list[str] = []
    ready = True
    checks = (
        ("database", lambda: probes.check_database(context.engine)),
        ("broker", lambda: probes.check_broker(context.settings)),
        ("triton", lambda: probes.check_triton(context.settings)),
    )
    for name, check in checks:
        try:
            check()
        except probes.ProbeError as exc:
            ready = False
            lines.append(f"{name}: failed: {exc}")
        else:
            lines.append(f"{name}: ok")
    return Response("\n".join(lines) + "\n", status=200 if ready else 503, mimetype="text/plain")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@blueprint.route("/metrics")
@public
def metrics() -> Response:
    context = web_context()
    if not context.settings.web.metrics_public and current_user() is None:
        abort(401)
    with context.engine.connect() as connection:
        counts = queries.counts(connection, utcnow())
        jobs = queries.jobs_by_state(connection)
        deliveries = queries.deliveries_by_state(connection)
        stages = queries.mean_stage_seconds(connection)
    out: list[str] = []

    def metric(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            out.append(f"{name}{labels} {value:g}")

    metric(
        "pacs_gateway_instances_received_total",
        "counter",
        "DICOM instances stored.",
        [("", counts.instances_total)],
    )
    metric(
        "pacs_gateway_studies_total", "counter", "Studies received.", [("", counts.studies_total)]
    )
    metric(
        "pacs_gateway_jobs",
        "gauge",
        "Pipeline jobs by state.",
        [(f'{{state="{_escape(s)}"}}', n) for s, n in jobs.items()],
    )
    metric("pacs_gateway_queue_depth", "gauge", "Jobs waiting in the queue.", [("", counts.queued)])
    metric(
        "pacs_gateway_job_stage_seconds_mean",
        "gauge",
        "Mean seconds per job stage over the most recent 1000 jobs.",
        [(f'{{stage="{_escape(s)}"}}', v) for s, v in stages.items()],
    )
    metric(
        "pacs_gateway_deliveries",
        "gauge",
        "Result deliveries by state.",
        [(f'{{state="{_escape(s)}"}}', n) for s, n in deliveries.items()],
    )
    metric(
        "pacs_gateway_delivery_failures_total",
        "counter",
        "Deliveries failed for good.",
        [("", deliveries.get("failed", 0))],
    )
    return Response("\n".join(out) + "\n", mimetype="text/plain; version=0.0.4")
