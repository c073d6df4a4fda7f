"""Jobs always end: retries exhausted by an unexpected error, the soft and the hard task time
limit (a real Celery worker on a private Redis, the gateway's own router), and the sweeper
that ends jobs stuck past a deadline (rows in SQLite and PostgreSQL, several sweepers at
once)."""

from __future__ import annotations

import shutil
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from gateway.audit import utcnow
from gateway.database import make_engine
from gateway.jobs.router import StudyRouter
from gateway.jobs.sweeper import StuckJobSweeper
from gateway.models import AuditEvent, Job, JobState, Study, StudyState
from gateway.settings import GatewaySettings, SettingsError
from tests.conftest import REPO, RunningGateway, free_port, make_settings
from tests.pipeline.harness import Process, RedisServer, wait_until
from tests.routing.studies import SeriesSpec, send_study

SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


# --- real worker ----------------------------------------------------------------------------
@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(workdir, free_port())
    server.start()
    yield server
    server.stop()


class BlackHole:
    """A TCP server that accepts and never answers: a hung Triton (gRPC waits forever)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.held: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.held.append(connection)

    def close(self) -> None:
        self.server.close()
        for connection in self.held:
            connection.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture
def start_worker_pipeline(
    settings: GatewaySettings,
    redis_server: RedisServer,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
    tmp_path: Path,
) -> Iterator[Callable[..., tuple[RunningGateway, Process]]]:
    """The gateway (listener, assembly, router) in this process and one real Celery worker
    process, on the test's database and a private Redis."""
    workers: list[Process] = []

    def _start(**overrides: Any) -> tuple[RunningGateway, Process]:
        configured = make_settings(
            settings.data_dir,
            settings.sqlalchemy_url,
            routing={
                "rules": [
                    {"name": "chest-ct", "conditions": [{"attribute": "modality", "value": "CT"}]}
                ],
                "series_selection": {"min_slices": 4},
            },
            queue={
                "broker_url": redis_server.url,
                "worker_concurrency": 1,
                "router_poll_interval_s": 0.3,
                "retry_backoff_initial_s": 0.2,
                "retry_backoff_max_s": 1,
                **overrides.pop("queue", {}),
            },
            **overrides,
        )
        gateway = start_gateway(configured)
        worker = Process("worker", configured, tmp_path / "worker.log").start()
        workers.append(worker)
        return gateway, worker

    yield _start
    for worker in workers:
        worker.stop()


def the_job(engine: Engine) -> Any:
    with engine.connect() as connection:
        return connection.execute(select(Job)).one_or_none()


def job_events(engine: Engine, kind: str) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [
            {"actor": actor, **(detail or {})}
            for actor, detail in connection.execute(
                select(AuditEvent.actor, AuditEvent.detail)
                .where(AuditEvent.kind == kind)
                .order_by(AuditEvent.id)
            ).all()
        ]


def wait_job_state(engine: Engine, worker: Process, state: JobState, timeout_s: float) -> Any:
    try:
        return wait_until(
            lambda: (job := the_job(engine)) is not None and job.state == state and job,
            timeout_s,
            f"the job {state.value}",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; job {the_job(engine)}\n{worker.log_tail(60)}") from exc


def corrupt_model_repository(tmp_path: Path) -> Path:
    """A copy of the model repository whose U-Net file is damaged: onnxruntime raises its
    own InvalidProtobuf, an exception the runner does not classify (retried, then given up)."""
    repository = tmp_path / "models"
    for model in ("lung_nodule_unet", "nodule_cnn"):
        shutil.copytree(REPO / "triton_models" / model, repository / model)
    (repository / "lung_nodule_unet" / "1" / "model.onnx").write_bytes(b"not a model")
    return repository


@SQLITE_ONLY
def test_retries_exhausted_by_an_unexpected_error_fail_the_job(
    start_worker_pipeline: Callable[..., tuple[RunningGateway, Process]],
    engine: Engine,
    tmp_path: Path,
) -> None:
    gateway, worker = start_worker_pipeline(
        queue={"max_retries": 1},
        inference={"runner": "onnxruntime", "model_repository": corrupt_model_repository(tmp_path)},
    )
    send_study(gateway, tmp_path / "study", [SeriesSpec(1, 5)])
    job = wait_job_state(engine, worker, JobState.FAILED, 90)
    assert job.attempts == 2
    assert job.last_error.startswith("gave up after 2 attempts: InvalidProtobuf: "), job.last_error
    assert "Traceback" not in job.last_error and "\n" not in job.last_error
    assert job.finished_at is not None
    (failed,) = job_events(engine, "job.failed")
    assert failed["reason"] == job.last_error and failed["actor"] == "worker"


@SQLITE_ONLY
def test_soft_time_limit_fails_the_job_with_the_reason(
    start_worker_pipeline: Callable[..., tuple[RunningGateway, Process]],
    black_hole: BlackHole,
    engine: Engine,
    tmp_path: Path,
) -> None:
    # Triton hangs (no answer, long gRPC deadlines): only the task time limit can end it.
    gateway, worker = start_worker_pipeline(
        queue={"task_time_limit_s": 4, "visibility_timeout_s": 60, "max_retries": 0},
        inference={
            "runner": "triton",
            "triton_grpc_url": f"127.0.0.1:{black_hole.port}",
            "triton_shared_memory": False,
            "request_timeout_s": 120,
            "deadline_s": 240,
        },
    )
    send_study(gateway, tmp_path / "study", [SeriesSpec(1, 5)])
    job = wait_job_state(engine, worker, JobState.FAILED, 60)
    assert job.last_error == "task time limit of 4 s reached"
    # The task itself recorded it at the soft limit (3.6 s), before the hard kill at 4 s.
    assert "Hard time limit" not in worker.log.read_text(errors="replace")
    assert job.attempts == 1
    (failed,) = job_events(engine, "job.failed")
    assert failed["reason"] == "task time limit of 4 s reached"


@SQLITE_ONLY
def test_hard_time_limit_fails_the_job_from_the_worker_main_process(
    start_worker_pipeline: Callable[..., tuple[RunningGateway, Process]],
    black_hole: BlackHole,
    engine: Engine,
    settings: GatewaySettings,
    tmp_path: Path,
) -> None:
    """The pool process cannot record the soft limit (the database is locked), so the hard
    limit kills it; the worker's main process then ends the job once the lock is gone."""
    gateway, worker = start_worker_pipeline(
        queue={"task_time_limit_s": 4, "visibility_timeout_s": 60, "max_retries": 0},
        inference={
            "runner": "triton",
            "triton_grpc_url": f"127.0.0.1:{black_hole.port}",
            "triton_shared_memory": False,
            "request_timeout_s": 120,
            "deadline_s": 240,
        },
    )
    send_study(gateway, tmp_path / "study", [SeriesSpec(1, 5)])
    wait_job_state(engine, worker, JobState.RUNNING, 60)
    database = settings.sqlalchemy_url.removeprefix("sqlite:///")
    lock = sqlite3.connect(database, isolation_level=None, timeout=30)
    try:
        lock.execute("BEGIN IMMEDIATE")  # every other writer waits (busy_timeout 30 s)
        wait_until(
            lambda: "Hard time limit (4" in worker.log.read_text(errors="replace"),
            30,
            "the hard time limit in the worker log",
        )
        # (read through the lock's own connection: the engine's reads begin IMMEDIATE)
        assert lock.execute("SELECT state FROM jobs").fetchall() == [("running",)]
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    job = wait_job_state(engine, worker, JobState.FAILED, 30)
    assert job.last_error == "task time limit of 4 s reached"
    (failed,) = job_events(engine, "job.failed")  # the signal comes twice: one event
    assert failed["actor"] == "worker"
    log = worker.log.read_text(errors="replace")
    assert f"MainProcess gateway.jobs.sweeper: job {job.id} failed: task time limit" in log
    assert "succeeded in" not in log, "expected the pool process killed at the hard limit"


# --- the stuck-job sweeper ---------------------------------------------------------------------
def sweeper_settings(settings: GatewaySettings, **queue: Any) -> GatewaySettings:
    return make_settings(
        settings.data_dir,
        settings.sqlalchemy_url,
        queue={
            "max_retries": 2,
            "task_time_limit_s": 60,
            "visibility_timeout_s": 120,
            "stuck_job_after_s": 600,
            "resend_queued_after_s": 3600,
            **queue,
        },
    )


def add_jobs(engine: Engine, jobs: list[tuple[JobState, int, float]]) -> list[int]:
    """One study; one job per (state, attempts, seconds since its last update)."""
    now = utcnow()
    ids = []
    with engine.begin() as connection:
        study_id = connection.execute(
            insert(Study)
            .values(
                study_instance_uid="1.2.826.0.1.3680043.8.498.1",
                state=StudyState.COMPLETE,
                first_received_at=now,
                last_received_at=now,
                completion_count=len(jobs),
                routed_generation=len(jobs),
            )
            .returning(Study.id)
        ).scalar_one()
        for generation, (state, attempts, age_s) in enumerate(jobs, start=1):
            ids.append(
                connection.execute(
                    insert(Job)
                    .values(
                        study_id=study_id,
                        study_instance_uid="1.2.826.0.1.3680043.8.498.1",
                        generation=generation,
                        rule_name="chest-ct",
                        pipeline="lung_nodules",
                        model_key="unet:1+cnn:1",
                        series_instance_uid="1.2.826.0.1.3680043.8.498.2",
                        destinations=[],
                        priority="routine",
                        state=state,
                        attempts=attempts,
                        created_at=now - timedelta(seconds=age_s),
                        enqueued_at=now - timedelta(seconds=age_s),
                        started_at=now - timedelta(seconds=age_s),
                        updated_at=now - timedelta(seconds=age_s),
                    )
                    .returning(Job.id)
                ).scalar_one()
            )
    return ids


def job_rows(engine: Engine) -> dict[int, Any]:
    with engine.connect() as connection:
        return {job.id: job for job in connection.execute(select(Job)).all()}


def test_sweeper_requeues_or_fails_jobs_stuck_past_the_deadline(
    settings: GatewaySettings, engine: Engine
) -> None:
    configured = sweeper_settings(settings)
    requeue, fail, recent, done, queued = add_jobs(
        engine,
        [
            (JobState.RUNNING, 1, 700),  # a worker died: attempts remain
            (JobState.RESULTS_BUILT, 3, 700),  # the last of 3 attempts died
            (JobState.INFERRED, 1, 500),  # slow but within the deadline
            (JobState.DELIVERED, 1, 7000),  # finished long ago
            (JobState.QUEUED, 0, 700),  # the router's (resend_queued_after_s)
        ],
    )
    sweeper = StuckJobSweeper(configured, engine)
    result = sweeper.sweep()
    assert (result.requeued, result.failed) == ([requeue], [fail])
    rows = job_rows(engine)
    assert rows[requeue].state == JobState.QUEUED and rows[requeue].enqueued_at is None
    assert "queued again after attempt 1 of 3" in rows[requeue].last_error
    assert rows[fail].state == JobState.FAILED and rows[fail].finished_at is not None
    assert rows[fail].last_error.startswith("stuck in results_built with no update for 70")
    assert "after the last of 3 attempts" in rows[fail].last_error
    assert rows[recent].state == JobState.INFERRED
    assert rows[done].state == JobState.DELIVERED and rows[queued].state == JobState.QUEUED
    # The requeued job goes to the broker on the router's next pass.
    sent: list[tuple[int, str]] = []
    router = StudyRouter(configured, engine, lambda job_id, p: sent.append((job_id, p)))
    assert router.dispatch_queued() == 1 and sent == [(requeue, "routine")]
    assert sweeper.sweep() == type(result)()  # nothing stuck any more
    (requeued,) = job_events(engine, "job.requeued")
    assert requeued["job"] == requeue and requeued["actor"] == "sweeper"
    assert requeued["was"] == "running"
    (failed,) = job_events(engine, "job.failed")
    assert failed["job"] == fail and failed["reason"] == rows[fail].last_error


def test_several_sweepers_act_once_per_job(settings: GatewaySettings, engine: Engine) -> None:
    configured = sweeper_settings(settings)
    stuck = add_jobs(
        engine, [(JobState.RUNNING, 1 + k % 3, 700 + k) for k in range(30)]
    )  # attempts 1, 2 (requeued) or 3 (failed)
    sweepers = [StuckJobSweeper(configured, make_engine(configured)) for _ in range(4)]
    barrier = threading.Barrier(len(sweepers))
    results: list[Any] = []

    def sweep(sweeper: StuckJobSweeper) -> None:
        barrier.wait()
        results.append(sweeper.sweep())

    threads = [threading.Thread(target=sweep, args=(s,)) for s in sweepers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for sweeper in sweepers:
        sweeper.engine.dispose()
    acted = sorted(j for r in results for j in r.requeued + r.failed)
    assert acted == stuck, "expected each stuck job acted on by exactly one sweeper"
    events = job_events(engine, "job.requeued") + job_events(engine, "job.failed")
    assert sorted(e["job"] for e in events) == stuck
    rows = job_rows(engine)
    assert {rows[j].state for j in stuck[2::3]} == {JobState.FAILED}
    assert {rows[j].state for k, j in enumerate(stuck) if k % 3 != 2} == {JobState.QUEUED}


def test_stuck_deadline_must_outlive_a_task(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"stuck_job_after_s.*expected more than.*1830"):
        make_settings(
            tmp_path,
            f"sqlite:///{tmp_path / 'x.db'}",
            queue={
                "task_time_limit_s": 1800,
                "retry_backoff_max_s": 30,
                "stuck_job_after_s": 1800,
            },
        )


def test_the_router_loop_runs_the_sweeper(settings: GatewaySettings, engine: Engine) -> None:
    configured = sweeper_settings(settings, router_poll_interval_s=0.1)
    (stuck,) = add_jobs(engine, [(JobState.INFERRED, 1, 700)])
    sent: list[tuple[int, str]] = []
    router = StudyRouter(configured, engine, lambda job_id, p: sent.append((job_id, p)))
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: sent, 20, "the stuck job sent again by the router's loop")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert sent == [(stuck, "routine")]
