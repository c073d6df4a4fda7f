"""/metrics in the Prometheus text format, read back strictly (tests/web/prometheus_text.py)
and by prometheus_client's own parser: duration histograms counted by the database from the
rows (each job in the right buckets, on both databases), part health and spool gauges; the
alert rules and the Grafana dashboard ask only for metrics /metrics exports."""

from __future__ import annotations

import json
import re
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from flask.testing import FlaskClient
from sqlalchemy import Engine

from gateway.audit import utcnow
from gateway.models import JobState
from gateway.settings import GatewaySettings
from tests.conftest import REPO
from tests.web.job_rows import add_delivery, add_job, add_study
from tests.web.prometheus_text import ParsedFamily, parse

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
GRAFANA = REPO / "deploy" / "grafana" / "pacs-gateway.json"
METRIC = re.compile(r"\bpacs_gateway_[a-z0-9_]+")


def _metrics(client: FlaskClient) -> tuple[str, dict[str, ParsedFamily]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    return text, parse(text)


def _buckets(family: ParsedFamily, **labels: str) -> dict[float, float]:
    buckets, _total, _count = family.histogram(**labels)
    return dict(buckets)


def test_duration_histograms_put_each_job_in_its_buckets(client_as: object, engine: Engine) -> None:
    t0 = utcnow() - timedelta(hours=2)
    s = timedelta(seconds=1)
    for delivered_after, started_after in ((20, 5), (100, 10), (5000, 4000)):
        add_job(
            engine,
            add_study(engine, t0),
            created_at=t0 + 2 * s,
            started_at=t0 + started_after * s,
            finished_at=t0 + delivered_after * s,
        )
    add_job(
        engine,
        add_study(engine, t0),
        pipeline="chest_xray_nodule",
        created_at=t0 + 2 * s,
        started_at=t0 + 42 * s,
        finished_at=t0 + 45 * s,
    )
    failed = add_study(engine, t0)
    add_job(
        engine,
        failed,
        created_at=t0,
        started_at=t0 + s,
        finished_at=t0 + 71 * s,
        state=JobState.FAILED,
    )
    # A job of a study that received more instances after it was delivered: no turnaround.
    add_job(
        engine,
        add_study(engine, t0 + 600 * s),
        created_at=t0 + 100 * s,
        started_at=t0 + 200 * s,
        finished_at=t0 + 300 * s,
    )
    for after, destination in ((0.7, "pacs"), (3, "pacs"), (40, "web"), (None, "web")):
        add_delivery(
            engine,
            failed[1],
            destination,
            t0,
            None if after is None else t0 + after * s,
        )

    text, families = _metrics(client_as(None))  # type: ignore[operator]
    turnaround = families["pacs_gateway_job_turnaround_seconds"]
    assert turnaround.kind == "histogram"
    assert _buckets(turnaround, pipeline="lung_nodules") == {
        30: 1, 60: 1, 120: 2, 300: 2, 600: 2, 900: 2, 1800: 2, 3600: 2, 7200: 3, 14400: 3,
        float("inf"): 3,
    }  # fmt: skip
    _, total, count = turnaround.histogram(pipeline="lung_nodules")
    assert count == 3 and total == pytest.approx(5120, abs=0.05)
    assert _buckets(turnaround, pipeline="chest_xray_nodule")[30] == 0
    assert _buckets(turnaround, pipeline="chest_xray_nodule")[60] == 1

    duration = families["pacs_gateway_job_duration_seconds"]
    assert _buckets(duration, pipeline="lung_nodules", state="delivered") == {
        1: 0, 5: 0, 10: 0, 30: 1, 60: 1, 120: 3, 300: 3, 600: 3, 1800: 4, float("inf"): 4,
    }  # fmt: skip
    _, total, _ = duration.histogram(pipeline="lung_nodules", state="delivered")
    assert total == pytest.approx(1205, abs=0.05)
    assert _buckets(duration, pipeline="lung_nodules", state="failed")[60] == 0
    assert _buckets(duration, pipeline="lung_nodules", state="failed")[120] == 1
    assert _buckets(duration, pipeline="chest_xray_nodule", state="delivered")[5] == 1

    latency = families["pacs_gateway_delivery_latency_seconds"]
    assert _buckets(latency, destination="pacs")[0.5] == 0
    assert _buckets(latency, destination="pacs")[1] == 1
    assert _buckets(latency, destination="pacs")[5] == 2
    assert latency.histogram(destination="web")[2] == 1  # the pending one is not counted
    assert families["pacs_gateway_destination_queued"].value(destination="web") == 1

    assert families["pacs_gateway_jobs"].value(state="delivered") == 5
    assert families["pacs_gateway_queue_depth"].value() == 0
    _same_as_prometheus_client(text, families)


def _same_as_prometheus_client(text: str, families: dict[str, ParsedFamily]) -> None:
    """prometheus_client reads the same families, kinds and samples."""
    from prometheus_client.parser import text_string_to_metric_families

    theirs = {f.name: f for f in text_string_to_metric_families(text)}
    for name, family in families.items():
        # prometheus_client names a counter family without its _total suffix.
        their = theirs[name.removesuffix("_total") if family.kind == "counter" else name]
        assert their.type == family.kind, name
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in their.samples}
        samples = {k: v for k, v in samples.items() if not k[0].endswith("_created")}
        assert samples == family.samples, name


def test_part_health_and_spool_gauges(client_as: object, settings: GatewaySettings) -> None:
    """These settings point Triton and the broker at a port nobody listens on."""
    _, families = _metrics(client_as(None))  # type: ignore[operator]
    health = families["pacs_gateway_part_health"]
    assert health.value(part="triton", name="127.0.0.1:1") == 2
    assert health.value(part="broker", name="redis://127.0.0.1:1") == 2
    assert health.value(part="worker", name="workers") == 2
    assert (
        health.value(part="database", name=settings.sqlalchemy_url.split(":")[0].split("+")[0]) == 0
    )
    assert health.value(part="destination", name="pacs") == 0
    assert families["pacs_gateway_workers_answering"].value() == 0
    spool = shutil.disk_usage(_existing(settings.spool_dir))
    free = families["pacs_gateway_spool_free_bytes"].value()
    assert abs(free - spool.free) < 200 * 1024 * 1024
    assert families["pacs_gateway_spool_size_bytes"].value() == spool.total
    assert families["pacs_gateway_spool_min_free_bytes"].value() == 0


def _existing(path: Path) -> Path:
    while not path.exists():
        path = path.parent
    return path


def _exported(client: FlaskClient) -> set[str]:
    """Every family /metrics declares, with a histogram's _bucket/_sum/_count series."""
    _, families = _metrics(client)
    names = set(families)
    for name, family in families.items():
        if family.kind == "histogram":
            names |= {name + suffix for suffix in ("_bucket", "_sum", "_count")}
    return names


def test_alert_rules_are_well_formed_and_ask_for_exported_metrics(client_as: object) -> None:
    exported = _exported(client_as(None))  # type: ignore[operator]
    document = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)), f"expected unique alert names, found {names}"
    for topic in ("Workers", "Queue", "Deliveries", "Disk"):
        assert any(topic in name for name in names), f"expected an alert on {topic}: {names}"
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
        assert rule["labels"]["severity"] in ("warning", "critical"), rule
        assert {"summary", "description"} <= set(rule["annotations"]), rule
        used = set(METRIC.findall(rule["expr"]))
        assert used, f"{rule['alert']}: expected a pacs_gateway_ metric, found none"
        assert used <= exported, f"{rule['alert']}: not exported: {used - exported}"


def test_grafana_dashboard_asks_for_exported_metrics(client_as: object) -> None:
    exported = _exported(client_as(None))  # type: ignore[operator]
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["title"] and dashboard["uid"]
    panels = dashboard["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert len(exprs) >= 8
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert used <= exported, f"not exported: {used - exported}"
    for wanted in (
        "pacs_gateway_job_turnaround_seconds_bucket",
        "pacs_gateway_queue_depth",
        "pacs_gateway_part_health",
        "pacs_gateway_studies_total",
    ):
        assert wanted in used, f"expected a panel on {wanted}"
    assert any("histogram_quantile(0.95" in e for e in exprs)
