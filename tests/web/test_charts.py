"""The dashboard's charts (server-side SVG): studies received, jobs done and failed per hour
over 24 hours and 7 days, turnaround p50/p95 per pipeline, queue depth. First with rows at
chosen hours (each bar counted, on both databases), then from a real pipeline run: Orthanc,
Triton, Redis, the gateway and a Celery worker as processes, the job held in the queue while
no worker runs."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from gateway.audit import utcnow
from gateway.health.status import as_utc
from gateway.models import Delivery, DeliveryState, Job, JobState, Study
from gateway.phantom import make_phantom, write_ct_series
from gateway.web import create_app
from gateway.web.users import Role, create_user
from tests.conftest import GATEWAY_AE
from tests.delivery.conftest import pacs  # noqa: F401
from tests.integration.dcmtk import storescu
from tests.integration.orthanc import Orthanc
from tests.pipeline.conftest import (  # noqa: F401
    Pipeline,
    orthanc_destination,
    phantom_study,
    redis_server,
    start_pipeline,
    triton,
)
from tests.pipeline.harness import jobs, wait_until
from tests.web.conftest import PASSWORD, sign_in
from tests.web.job_rows import add_job, add_study
from tests.web.prometheus_text import parse
from workers.triton_server import TritonServer

BAR = re.compile(
    r'<rect class="bar [^"]*" data-series="([^"]+)" data-hour="([^"]+)" data-value="(\d+)"'
)
PERCENTILE = re.compile(
    r'data-pipeline="([^"]+)" data-percentile="(p50|p95)" data-seconds="([0-9.]+)"'
)


def bars(page: str, chart: str) -> dict[str, dict[str, int]]:
    """Series -> hour (ISO, UTC) -> value of the chart's bars."""
    svg = page.split(f'<svg id="{chart}"', 1)[1].split("</svg>", 1)[0]
    found: dict[str, dict[str, int]] = {}
    for series, hour, value in BAR.findall(svg):
        found.setdefault(series, {})[hour] = int(value)
    return found


def nonzero(values: dict[str, int]) -> dict[str, int]:
    return {hour: n for hour, n in values.items() if n}


def hour(moment: datetime) -> str:
    return f"{as_utc(moment):%Y-%m-%dT%H}:00Z"


def _page(client: FlaskClient, path: str = "/") -> str:
    response = client.get(path)
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def test_each_bar_counts_its_hour_over_24_hours_and_7_days(
    client_as: Callable[[str | None], FlaskClient], engine: Engine
) -> None:
    now = utcnow()
    three_ago, thirty_ago = now - timedelta(hours=3), now - timedelta(hours=30)
    for seconds in (60, 100):
        add_job(
            engine,
            add_study(engine, three_ago),
            created_at=three_ago,
            started_at=three_ago + timedelta(seconds=5),
            finished_at=three_ago + timedelta(seconds=seconds),
        )
    add_job(
        engine,
        add_study(engine, now - timedelta(hours=2)),
        created_at=now - timedelta(hours=2),
        finished_at=now - timedelta(hours=2),
        state=JobState.FAILED,
    )
    add_job(
        engine,
        add_study(engine, thirty_ago),
        pipeline="chest_xray_nodule",
        created_at=thirty_ago,
        started_at=thirty_ago + timedelta(seconds=1),
        finished_at=thirty_ago + timedelta(seconds=30),
    )
    # Waited from 5 hours ago until 90 minutes ago; another waits still.
    waited = (now - timedelta(hours=5), now - timedelta(minutes=90))
    add_job(engine, add_study(engine, waited[0]), created_at=waited[0], started_at=waited[1],
            state=JobState.RUNNING)  # fmt: skip
    add_job(engine, add_study(engine, now - timedelta(minutes=10)),
            created_at=now - timedelta(minutes=10), state=JobState.QUEUED)  # fmt: skip

    client = client_as("viewer")
    day = _page(client)
    studies = bars(day, "chart-studies")["studies"]
    assert len(studies) == 24
    received = Counter(hour(t - timedelta(seconds=5)) for t in (three_ago, three_ago))
    received[hour(now - timedelta(hours=2) - timedelta(seconds=5))] += 1
    received[hour(waited[0] - timedelta(seconds=5))] += 1
    received[hour(now - timedelta(minutes=10, seconds=5))] += 1
    assert nonzero(studies) == dict(received)
    finished = bars(day, "chart-jobs")
    assert nonzero(finished["delivered"]) == dict(
        Counter(hour(three_ago + timedelta(seconds=n)) for n in (60, 100))
    )
    assert nonzero(finished["failed"]) == {hour(now - timedelta(hours=2)): 1}
    queue = bars(day, "chart-queue")["queued"]
    ends = {h: min(datetime.fromisoformat(h.replace("Z", "+00:00")) + timedelta(hours=1), now)
            for h in queue}  # fmt: skip
    expected = {
        h: int(waited[0] <= end < waited[1]) + int(now - timedelta(minutes=10) <= end)
        for h, end in ends.items()
    }
    assert nonzero(queue) == nonzero(expected)
    assert max(queue.values()) >= 1
    # Turnaround of the two delivered lung_nodules jobs, 60 and 100 s: p50 80, p95 98.
    shown = PERCENTILE.findall(day)
    assert ("lung_nodules", "p50", "80.000") in shown and ("lung_nodules", "p95", "98.000") in shown
    assert "<td>lung_nodules</td><td>2</td><td>80.0</td><td>98.0</td>" in day
    assert "chest_xray_nodule" not in day.split('id="chart-turnaround"')[1].split("</svg>")[0]

    week = _page(client, "/?range=7d")
    assert '<b id="range-7d">' in week and 'href="/?range=24h"' in week
    assert len(bars(week, "chart-studies")["studies"]) == 24 * 7
    week_jobs = bars(week, "chart-jobs")
    assert sum(week_jobs["delivered"].values()) == 3
    assert week_jobs["delivered"][hour(thirty_ago + timedelta(seconds=30))] == 1
    assert ("chest_xray_nodule", "p95", "30.000") in PERCENTILE.findall(week)
    assert len(bars(_page(client, "/?range=nonsense"), "chart-jobs")["failed"]) == 24


# ---- a real pipeline run ------------------------------------------------------------------


def _turnaround_seconds(engine: Engine) -> list[float]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Job.delivered_at, Study.last_received_at)
            .join(Study, Study.id == Job.study_id)
            .where(Job.state == JobState.DELIVERED)
        ).all()
    return [(as_utc(a) - as_utc(b)).total_seconds() for a, b in rows]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_charts_and_metrics_from_a_real_pipeline_run(
    pacs: Orthanc,  # noqa: F811
    triton: TritonServer,  # noqa: F811
    start_pipeline: Callable[..., Pipeline],  # noqa: F811
    tmp_path: Path,
) -> None:
    pipeline = start_pipeline(triton.grpc_url, [orthanc_destination(pacs)], workers=0)
    settings = pipeline.settings.model_copy(
        update={"web": pipeline.settings.web.model_copy(update={"session_cookie_secure": False})}
    )
    create_user(pipeline.engine, settings.web, "viewer", PASSWORD, Role.VIEWER, actor="test")
    client = create_app(settings, pipeline.engine).test_client()
    assert sign_in(client, "viewer") == 302

    def send(paths: list[Path]) -> None:
        sent = storescu(pipeline.settings.dicom.port, paths, calling="CT_SCANNER",
                        called=GATEWAY_AE)  # fmt: skip
        assert sent.ok, sent.output[-2000:]

    _, paths = phantom_study(tmp_path / "ct", seed=7601, shape=(24, 256, 256))
    send(paths)
    short = make_phantom(7602, shape=(2, 128, 128), n_nodules=0)
    send(write_ct_series(short, tmp_path / "short"))  # too few slices: failed at once

    # No worker yet: the job waits in the queue, and the queue chart says so.
    wait_until(
        lambda: {j.state for j in jobs(pipeline.engine)} == {JobState.QUEUED, JobState.FAILED},
        60,
        "one job queued and one failed",
    )
    page = _page(client)
    assert list(nonzero(bars(page, "chart-queue")["queued"]).values()) == [1]
    assert 'id="queue-depth">1<' in page
    assert (
        parse(client.get("/metrics").get_data(as_text=True))["pacs_gateway_queue_depth"].value()
        == 1
    )

    pipeline.start_worker()
    wait_until(
        lambda: any(j.state == JobState.DELIVERED for j in jobs(pipeline.engine)),
        240,
        "the job delivered",
    )
    rows = jobs(pipeline.engine)
    page = _page(client)
    with pipeline.engine.connect() as connection:
        received = connection.execute(select(Study.first_received_at)).scalars().all()
        delivered = connection.execute(
            select(Delivery).where(Delivery.state == DeliveryState.DELIVERED)
        ).all()
    assert nonzero(bars(page, "chart-studies")["studies"]) == dict(Counter(map(hour, received)))
    jobs_chart = bars(page, "chart-jobs")
    done = next(j for j in rows if j.state == JobState.DELIVERED)
    failed = next(j for j in rows if j.state == JobState.FAILED)
    assert nonzero(jobs_chart["delivered"]) == {hour(done.finished_at): 1}
    assert nonzero(jobs_chart["failed"]) == {hour(failed.finished_at): 1}
    assert nonzero(bars(page, "chart-queue")["queued"]).get(hour(utcnow()), 0) == 0
    (turnaround,) = _turnaround_seconds(pipeline.engine)
    assert turnaround > 0
    shown = {(p, q): float(s) for p, q, s in PERCENTILE.findall(page)}
    assert shown[("lung_nodules", "p50")] == pytest.approx(turnaround, abs=0.01)
    assert shown[("lung_nodules", "p95")] == pytest.approx(
        np.percentile([turnaround], 95), abs=0.01
    )
    assert f"<td>lung_nodules</td><td>1</td><td>{turnaround:.1f}</td>" in page

    families = parse(client.get("/metrics").get_data(as_text=True))
    buckets, total, count = families["pacs_gateway_job_turnaround_seconds"].histogram(
        pipeline="lung_nodules"
    )
    assert count == 1 and total == pytest.approx(turnaround, abs=0.01)
    assert all(n == (1 if le >= turnaround else 0) for le, n in buckets)
    latency = families["pacs_gateway_delivery_latency_seconds"].histogram(destination="orthanc")
    assert latency[2] == len(delivered) == 2  # the SEG and the SR
    assert families["pacs_gateway_jobs"].value(state="failed") == 1
    assert (
        families["pacs_gateway_job_duration_seconds"].histogram(
            pipeline="lung_nodules", state="delivered"
        )[2]
        == 1
    )
