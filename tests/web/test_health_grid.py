"""The dashboard's health grid with each part up and then down, real parts throughout: the
gateway's own listener processes (heartbeats; one killed), two Celery workers on a private
Redis (one stopped, then Redis stopped), the Triton Inference Server (stopped), Orthanc and a
port nobody listens on as destinations, the database, the spool's disk."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, select, update

from gateway import migrate
from gateway.audit import utcnow as _now
from gateway.delivery.deliverer import Deliverer
from gateway.delivery.registry import seed_from_settings
from gateway.health.database import database_health
from gateway.health.destinations import destination_health
from gateway.health.heartbeat import ProcessHeartbeat
from gateway.health.listeners import listener_health
from gateway.health.spool import spool_health, spool_usage
from gateway.health.status import Level
from gateway.models import Delivery, Heartbeat, JobState
from gateway.results.build import ResultObject
from gateway.results.publish import publish_results
from gateway.settings import GatewaySettings
from gateway.web import create_app
from gateway.web.users import Role, create_user
from tests.conftest import GATEWAY_AE, free_port, make_settings
from tests.delivery.conftest import pacs, small_results  # noqa: F401
from tests.delivery.scripted_peers import scripted_storage_scp
from tests.inference.conftest import MODEL_REPOSITORY
from tests.integration.dcmtk import storescu
from tests.integration.orthanc import Orthanc
from tests.pipeline.conftest import (  # noqa: F401
    Pipeline,
    orthanc_destination,
    phantom_study,
    redis_server,
    start_pipeline,
)
from tests.pipeline.harness import jobs, wait_until
from tests.web.conftest import PASSWORD, sign_in
from tests.web.health_cells import Cell, health_cells, of_part
from workers.triton_server import TritonServer


def _beat(engine: Engine, name: str) -> Heartbeat:
    with engine.connect() as connection:
        row = connection.execute(select(Heartbeat.__table__).where(Heartbeat.name == name)).one()
    return row  # type: ignore[return-value]


def test_a_listener_heartbeat_goes_green_late_then_red(engine: Engine) -> None:
    """A real heartbeat thread at 0.2 s: green while it beats; once its process stops
    serving (alive false, as a listener whose threads died), amber after 2.5 intervals and
    red after 6, named by how long it has been silent."""
    serving = threading.Event()
    serving.set()
    stop = threading.Event()
    heartbeat = ProcessHeartbeat(
        engine,
        part="listener",
        slot="listener-test",
        interval_s=0.2,
        detail=lambda: {"ae_title": GATEWAY_AE, "ports": [11112], "associations": 2},
        alive=serving.is_set,
    )
    thread = heartbeat.start(stop)
    try:
        wait_until(lambda: listener_health(engine, _now())[0].level is Level.GREEN, 10, "green")
        (row,) = listener_health(engine, _now())
        assert row.name == heartbeat.beat.name and "2 open associations" in row.summary
        assert ("AE title", GATEWAY_AE) in row.detail and ("ports", "11112") in row.detail
        serving.clear()
        late = wait_until(
            lambda: (r := listener_health(engine, _now())[0]).level is Level.AMBER and r,
            10,
            "amber",
        )
        assert late.summary.startswith("heartbeat late by")
        silent_since = _beat(engine, heartbeat.beat.name).beat_at
        dead = wait_until(
            lambda: (r := listener_health(engine, _now())[0]).level is Level.RED and r,
            10,
            "red",
        )
        assert dead.summary.startswith("no heartbeat for")
        assert _beat(engine, heartbeat.beat.name).beat_at == silent_since  # it stopped writing
    finally:
        stop.set()
        thread.join(timeout=5)
    (stopped,) = listener_health(engine, _now())
    assert stopped.level is Level.RED and stopped.summary.startswith("stopped at")


def test_a_listener_whose_process_is_gone_is_red_at_once(engine: Engine) -> None:
    """A heartbeat written moments ago by a process that has exited: red without waiting."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    heartbeat = ProcessHeartbeat(
        engine,
        part="listener",
        slot="listener-9",
        interval_s=60,
        detail=dict,
        alive=lambda: True,
    )
    heartbeat.write(started=True)
    with engine.begin() as connection:
        connection.execute(update(Heartbeat).values(pid=child.pid))
    (row,) = listener_health(engine, _now())
    assert row.level is Level.RED and row.summary == f"process {child.pid} is gone"
    with engine.begin() as connection:
        connection.execute(update(Heartbeat).values(pid=os.getpid()))
    assert listener_health(engine, _now())[0].level is Level.GREEN


def test_serve_beats_for_its_listener_and_records_its_stop(
    settings: GatewaySettings, engine: Engine, start_gateway: Callable[..., Any]
) -> None:
    """`serve` (one listener process, in a thread here) writes the heartbeat from start-up;
    a clean stop leaves the row red with the time it stopped."""
    gateway = start_gateway(settings)
    (row,) = wait_until(
        lambda: (rows := listener_health(engine, _now()))[0].level is Level.GREEN and rows,
        20,
        "the listener's heartbeat",
    )
    assert row.name.endswith("/listener")
    assert ("ports", str(gateway.port)) in row.detail
    gateway.stop()
    (stopped,) = listener_health(engine, _now())
    assert stopped.level is Level.RED and stopped.summary.startswith("stopped at")


def test_no_listener_heartbeat_at_all_is_red(engine: Engine) -> None:
    (row,) = listener_health(engine, _now())
    assert row.level is Level.RED and "pacs-gateway serve" in row.summary


def test_database_answers_lags_behind_the_migrations_or_is_unreachable(
    settings: GatewaySettings, engine: Engine, database_url: str
) -> None:
    ok = database_health(settings, engine, _now())
    assert ok.level is Level.GREEN and ok.heartbeat_at is not None
    migrate.downgrade(settings, "0011", engine=engine)
    behind = database_health(settings, engine, _now())
    head = ScriptDirectory.from_config(migrate.alembic_config(settings)).get_current_head()
    assert behind.level is Level.AMBER and f"schema 0011, expected {head}" in behind.summary
    migrate.upgrade(settings, engine=engine)
    port = free_port()  # nothing listens: a real refused connection
    gone = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/x")
    try:
        down = database_health(settings, gone, _now())
    finally:
        gone.dispose()
    assert down.level is Level.RED and down.summary.startswith("expected the database to answer")


def test_spool_is_red_under_the_threshold_and_amber_near_it(
    settings: GatewaySettings, tmp_path: Path
) -> None:
    free_mb = spool_usage(settings).free_bytes // (1024 * 1024)

    def with_threshold(mb: int) -> GatewaySettings:
        return make_settings(
            settings.data_dir, settings.sqlalchemy_url, storage={"min_free_mb": mb}
        )

    refused = spool_health(with_threshold(free_mb + 1024), _now())
    assert refused.level is Level.RED and "C-STORE is refused" in refused.summary
    near = spool_health(with_threshold(max(free_mb * 2 // 3, 1)), _now())
    assert near.level is Level.AMBER and near.summary.startswith("filling")
    usage = spool_usage(settings)
    plenty = spool_health(with_threshold(0), _now())
    expected = Level.AMBER if usage.used_fraction >= 0.9 else Level.GREEN
    assert plenty.level is expected, plenty.summary


def test_a_destination_is_red_while_failing_and_green_once_delivered(
    settings: GatewaySettings,
    engine: Engine,
    small_results: list[ResultObject],  # noqa: F811
) -> None:
    """Real C-STORE attempts: first to a port nobody listens on, then to a Storage SCP."""
    port = free_port()
    settings = make_settings(
        settings.data_dir,
        settings.sqlalchemy_url,
        destinations=[
            {
                "kind": "dicom",
                "name": "peer",
                "ae_title": "SCRIPTED",
                "host": "127.0.0.1",
                "port": port,
            }
        ],
        delivery={"connect_timeout_s": 3, "backoff_initial_s": 0.1, "max_attempts": 10},
    )
    seed_from_settings(engine, settings.destinations)
    (fresh,) = destination_health(engine, _now())
    assert fresh.level is Level.GREEN and fresh.summary.startswith("nothing delivered yet")
    publish_results(settings, engine, small_results)
    Deliverer(settings, engine).deliver_due()
    (failing,) = destination_health(engine, _now())
    assert failing.level is Level.RED, failing
    assert failing.summary.startswith("failing: 2 queued; last error:")
    assert "no association" in failing.summary
    assert ("last success", "never") in failing.detail
    with scripted_storage_scp(port=port):
        with engine.begin() as connection:
            connection.execute(update(Delivery).values(next_attempt_at=_now()))
        Deliverer(settings, engine).deliver_due()
    (delivered,) = destination_health(engine, _now())
    assert delivered.level is Level.GREEN and delivered.summary == "delivering; 0 queued"
    assert delivered.heartbeat_at is not None
    assert _now() - delivered.heartbeat_at < timedelta(seconds=30)


# ---- every part, real, up and then each one down ------------------------------------------


def _page(client: object) -> str:
    response = client.get("/")  # type: ignore[attr-defined]
    assert response.status_code == 200
    return str(response.get_data(as_text=True))


def _metric(client: object, line_start: str) -> float | None:
    text = client.get("/metrics").get_data(as_text=True)  # type: ignore[attr-defined]
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def _wait_cells(
    client: object,
    check: Callable[[dict[tuple[str, str], Cell]], object],
    timeout_s: float,
    what: str,
) -> dict[tuple[str, str], Cell]:
    seen: list[dict[tuple[str, str], Cell]] = []

    def probe() -> object:
        cells = health_cells(_page(client))
        seen[:] = [cells]
        return check(cells) and cells

    try:
        return wait_until(probe, timeout_s, what)  # type: ignore[no-any-return]
    except AssertionError as exc:
        found = "\n".join(f"  {c}" for c in (seen[0].values() if seen else []))
        raise AssertionError(f"{exc}; the grid showed:\n{found}") from None


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_every_part_green_then_each_one_stopped_turns_red(
    pacs: Orthanc,  # noqa: F811
    start_pipeline: Callable[..., Pipeline],  # noqa: F811
    tmp_path: Path,
) -> None:
    triton = TritonServer(
        MODEL_REPOSITORY,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_path=tmp_path / "triton.log",
        startup_timeout_s=180,
    )
    triton.start()
    try:
        _every_part(pacs, start_pipeline, triton, tmp_path)
    finally:
        triton.stop()


def _every_part(
    orthanc: Orthanc,
    start: Callable[..., Pipeline],
    triton: TritonServer,
    tmp_path: Path,
) -> None:
    offline = {
        "kind": "dicom",
        "name": "offline",
        "ae_title": "OFFLINE",
        "host": "127.0.0.1",
        "port": free_port(),
    }
    pipeline = start(
        triton.grpc_url,
        [orthanc_destination(orthanc), offline],
        workers=2,
        dicom={"listener_processes": 2},
        inference={"batch_size": 2},
        delivery={"backoff_initial_s": 0.5, "backoff_max_s": 1, "poll_interval_s": 0.3},
    )
    settings = pipeline.settings.model_copy(
        update={
            "web": pipeline.settings.web.model_copy(
                update={"session_cookie_secure": False, "probe_timeout_s": 2.0}
            )
        }
    )
    create_user(pipeline.engine, settings.web, "viewer", PASSWORD, Role.VIEWER, actor="test")
    client = create_app(settings, pipeline.engine).test_client()
    assert sign_in(client, "viewer") == 302
    worker_names = [f"gateway-{w.process.pid}@{os.uname().nodename}" for w in pipeline.workers]

    # Everything up: two listener processes beat, both workers answer, Triton and each
    # model of the registered pipelines are ready, the broker and the database answer.
    cells = _wait_cells(
        client,
        lambda c: (
            sum(1 for x in c.values() if x.part == "listener" and x.level == "green") == 2
            and all(
                c.get(("worker", n), None) and c[("worker", n)].level == "green"
                for n in worker_names
            )
        ),
        120,
        "two listener processes and two workers green",
    )
    assert cells[("worker", "workers")].text.startswith("workers green 2 answering")
    assert cells[("triton", triton.grpc_url)].level == "green"
    for model in ("lung_nodule_unet:1", "nodule_cnn:1"):
        assert cells[("model", model)].level == "green", cells[("model", model)]
        assert "lung_nodules" in cells[("model", model)].text
    broker = next(c for c in cells.values() if c.part == "broker")
    assert broker.level == "green" and "0 job messages waiting" in broker.text
    assert next(c for c in cells.values() if c.part == "database").level == "green"
    assert cells[("destination", "orthanc")].level == "green"
    listeners = [c for c in cells.values() if c.part == "listener"]
    assert {c.name.rsplit("/", 1)[1] for c in listeners} == {"listener-1", "listener-2"}
    assert all(f"AE title {GATEWAY_AE}" in c.text for c in listeners)

    # A study arrives: the worker that took it says which job it runs (a large series in
    # small batches, as in tests/pipeline/test_faults.py, so the job is caught running).
    _, paths = phantom_study(tmp_path / "ct", seed=7501, shape=(96, 512, 512))
    sent = storescu(pipeline.settings.dicom.port, paths, calling="CT_SCANNER", called=GATEWAY_AE)
    assert sent.ok, sent.output[-2000:]
    job = wait_until(
        lambda: next((j for j in jobs(pipeline.engine) if j.started_at is not None), None),
        120,
        "the job to start",
    )

    def running(c: dict[tuple[str, str], Cell]) -> bool:
        assert jobs(pipeline.engine)[0].inferred_at is None, "inference ended first: slow it"
        return any(
            f"running job {job.id} (lung_nodules) for" in x.text
            for x in c.values()
            if x.part == "worker"
        )

    _wait_cells(client, running, 60, f"a worker running job {job.id}")

    # Results reach Orthanc; the port nobody listens on fails and its objects wait.
    cells = _wait_cells(
        client,
        lambda c: (
            c[("destination", "offline")].level == "red"
            and "last success never" not in c[("destination", "orthanc")].text
        ),
        300,
        "orthanc delivered and offline failing",
    )
    assert cells[("destination", "orthanc")].level == "green"
    assert "failing: 2 queued; last error:" in cells[("destination", "offline")].text
    assert _metric(client, 'pacs_gateway_destination_queued{destination="offline"}') == 2
    assert (jobs(pipeline.engine)[0]).state == JobState.RESULTS_BUILT  # offline still owed

    # One worker stopped: red with its last answer; the other still answers.
    stopped, alive = pipeline.workers[1], worker_names[0]
    stopped.stop()
    cells = _wait_cells(
        client, lambda c: c[("worker", worker_names[1])].level == "red", 60, "the worker red"
    )
    assert "not answering: last answered" in cells[("worker", worker_names[1])].text
    assert "never" not in cells[("worker", worker_names[1])].text
    assert cells[("worker", alive)].level == "green"
    assert cells[("worker", "workers")].level == "green"
    assert _metric(client, "pacs_gateway_workers_answering") == 1
    assert (
        _metric(client, f'pacs_gateway_part_health{{part="worker",name="{worker_names[1]}"}}') == 2
    )

    # A listener process killed: red at once, by its process id; the other stays green.
    with pipeline.engine.connect() as connection:
        beats = connection.execute(
            select(Heartbeat.__table__).where(Heartbeat.part == "listener").order_by(Heartbeat.name)
        ).all()
    victim, survivor = beats[0], beats[1]
    os.kill(victim.pid, signal.SIGKILL)
    cells = _wait_cells(
        client, lambda c: c[("listener", victim.name)].level == "red", 30, "the listener red"
    )
    assert f"process {victim.pid} is gone" in cells[("listener", victim.name)].text
    assert cells[("listener", survivor.name)].level == "green"

    # Triton stopped: the server and every model red, each with when it was last ready.
    triton.stop()
    page = wait_until(
        lambda: (
            (p := _page(client))
            and health_cells(p)[("triton", triton.grpc_url)].level == "red"
            and p
        ),
        60,
        "Triton red",
    )
    assert '<p class="banner">Triton: ' in page
    for model in ("lung_nodule_unet:1", "nodule_cnn:1"):
        cell = health_cells(page)[("model", model)]
        assert cell.level == "red" and "unknown: Triton does not answer" in cell.text
        assert "last heartbeat never" not in cell.text
    assert (
        _metric(client, f'pacs_gateway_part_health{{part="triton",name="{triton.grpc_url}"}}') == 2
    )

    # Redis stopped: the broker red, the workers unknown through it.
    pipeline.redis.stop()
    page = wait_until(
        lambda: (p := _page(client)) and any(c.level == "red" for c in of_part(p, "broker")) and p,
        60,
        "the broker red",
    )
    assert '<p class="banner">Broker: ' in page
    cells = health_cells(page)
    assert cells[("worker", "workers")].level == "red"
    assert "unknown: the broker does not answer" in cells[("worker", "workers")].text
