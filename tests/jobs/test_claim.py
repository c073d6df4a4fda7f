"""A job runs in one runner at a time: two runner processes given the same job at the same
moment (a task message delivered twice) run its stages once (one job.started, one
job.inferred, one SEG and one SR received by a PACS that counts every C-STORE), and the other
records job.skipped; a runner killed mid-job (SIGKILL) keeps the job until its lease
expires, and then another takes it over and delivers it, once. SQLite and PostgreSQL, the
real listener, the real models (onnxruntime in process)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from gateway.assembly import StudyAssembler
from gateway.audit import utcnow
from gateway.jobs.router import StudyRouter
from gateway.models import AuditEvent, Job, JobState
from gateway.phantom import make_phantom, write_ct_series
from gateway.settings import GatewaySettings
from tests.conftest import REPO, RunningGateway, make_settings, settings_environment
from tests.pipeline.harness import wait_until
from tests.scaling.counting_pacs import CountingPacs, counting_pacs
from tests.scu import send_files


@pytest.fixture
def pacs() -> Iterator[CountingPacs]:
    with counting_pacs() as running:
        yield running


def job_settings(base: GatewaySettings, pacs: CountingPacs, lease_s: float) -> GatewaySettings:
    return make_settings(
        base.data_dir,
        base.sqlalchemy_url,
        assembly={"quiet_period_s": 3600},
        queue={
            "router_poll_interval_s": 3600,
            "broker_url": "redis://127.0.0.1:6379/15",
            "job_lease_s": lease_s,
        },
        routing={
            "rules": [
                {"name": "chest-ct", "conditions": [{"attribute": "modality", "value": "CT"}]}
            ],
            "series_selection": {"min_slices": 4},
        },
        destinations=[pacs.destination()],
        delivery={"connect_timeout_s": 5},
        inference={"runner": "onnxruntime"},
    )


def one_job(
    settings: GatewaySettings,
    engine: Engine,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
    folder: Path,
) -> int:
    """A phantom CT received by the real listener, completed and routed: its one job."""
    gateway = start_gateway(settings)
    phantom = make_phantom(
        3, shape=(12, 128, 128), spacing=(3.0, 2.4, 2.4), n_nodules=1, nodule_diameter_mm=(14, 18)
    )
    paths = write_ct_series(phantom, folder)
    assert send_files(gateway.port, paths) == [0] * len(paths)
    StudyAssembler(engine, 0.001).complete_quiet_studies(now=utcnow() + timedelta(seconds=5))
    router = StudyRouter(settings, engine, lambda job_id, priority: None)
    router.seed()
    (job_id,) = router.route_complete_studies()
    return int(job_id)


@dataclass
class RunnerProcess:
    """tests/jobs/claim_runner.py: ready, then runs the job when its go file appears."""

    name: str
    go: Path
    process: subprocess.Popen[str]

    @classmethod
    def start(
        cls, settings: GatewaySettings, job_id: int, go: Path, name: str, *extra: str
    ) -> RunnerProcess:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.jobs.claim_runner", str(job_id), str(go), name, *extra],
            cwd=REPO,
            env=settings_environment(settings),
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()  # imports done, database connected
        assert line.strip() == "ready", f"expected 'ready' from runner {name}, found {line!r}"
        return cls(name, go, process)

    def outcome(self, timeout_s: float = 240) -> dict[str, Any]:
        out, _ = self.process.communicate(timeout=timeout_s)
        assert self.process.returncode == 0, f"runner {self.name} exited {self.process.returncode}"
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def runners() -> Iterator[list[RunnerProcess]]:
    started: list[RunnerProcess] = []
    yield started
    for runner in started:
        runner.kill()


def events(engine: Engine, kind: str) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [
            dict(detail or {})
            for detail in connection.execute(
                select(AuditEvent.detail).where(AuditEvent.kind == kind).order_by(AuditEvent.id)
            ).scalars()
        ]


def the_job(engine: Engine, job_id: int) -> Any:
    with engine.connect() as connection:
        return connection.execute(select(Job).where(Job.id == job_id)).one()


def test_two_runners_given_the_same_job_at_once_run_it_once(
    settings: GatewaySettings,
    engine: Engine,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
    pacs: CountingPacs,
    runners: list[RunnerProcess],
    tmp_path: Path,
) -> None:
    configured = job_settings(settings, pacs, lease_s=60)
    job_id = one_job(configured, engine, start_gateway, tmp_path / "ct")
    go = tmp_path / "go"
    for name in ("worker-a", "worker-b"):
        runners.append(RunnerProcess.start(configured, job_id, go, name))
    go.touch()  # both start within a millisecond or two
    outcomes = {runner.name: runner.outcome() for runner in runners}

    started = events(engine, "job.started")
    skipped = events(engine, "job.skipped")
    assert len(started) == 1, f"expected the stages run by one runner, found {started}"
    assert len(events(engine, "job.inferred")) == 1
    assert len(events(engine, "job.results_built")) == 1
    assert len(events(engine, "job.delivered")) == 1
    assert len(skipped) == 1, f"expected the other runner to record job.skipped: {outcomes}"
    winner, loser = started[0]["worker"], skipped[0]["worker"]
    assert {winner, loser} == {"worker-a", "worker-b"}
    assert skipped[0]["reason"] == "claimed"
    assert skipped[0]["holder"] == started[0]["holder"]
    assert str(skipped[0]["holder"]).startswith(f"{winner}/")
    assert outcomes[winner]["state"] == JobState.DELIVERED.value
    assert "held by" in outcomes[loser]["message"]

    (received,) = pacs.received().values()
    assert received == Counter({"SEG": 1, "SR": 1}), f"expected one SEG and one SR: {received}"
    job = the_job(engine, job_id)
    assert job.state == JobState.DELIVERED and job.attempts == 1
    assert job.claimed_by is None and job.lease_until is None, "expected the lease given back"


def test_a_killed_runner_keeps_the_job_until_its_lease_expires_then_another_delivers_it(
    settings: GatewaySettings,
    engine: Engine,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
    pacs: CountingPacs,
    runners: list[RunnerProcess],
    tmp_path: Path,
) -> None:
    lease_s = 5.0
    configured = job_settings(settings, pacs, lease_s=lease_s)
    job_id = one_job(configured, engine, start_gateway, tmp_path / "ct")
    holding = tmp_path / "holding"
    dying = RunnerProcess.start(
        configured, job_id, tmp_path / "go-a", "worker-a", "--hold", str(holding)
    )
    runners.append(dying)
    early = RunnerProcess.start(configured, job_id, tmp_path / "go-b", "worker-b")
    runners.append(early)
    late = RunnerProcess.start(configured, job_id, tmp_path / "go-c", "worker-c")
    runners.append(late)

    dying.go.touch()
    wait_until(holding.exists, 60, "runner A started and about to infer")
    # A renews its lease while it works, beyond the lease's own length.
    time.sleep(lease_s * 1.5)
    assert the_job(engine, job_id).lease_until is not None
    dying.kill()  # SIGKILL: nothing gives its lease back
    assert dying.process.returncode == -9
    dead_holder = the_job(engine, job_id).claimed_by
    assert dead_holder is not None and dead_holder.startswith("worker-a/")

    early.go.touch()  # a second message for the job while A's lease is live: nothing done
    assert early.outcome()["state"] == JobState.RUNNING.value
    (skip,) = events(engine, "job.skipped")
    assert (skip["worker"], skip["holder"]) == ("worker-b", dead_holder)

    wait_until(
        lambda: (
            the_job(engine, job_id).lease_until.replace(tzinfo=None) < utcnow().replace(tzinfo=None)
        ),
        lease_s * 3,
        "runner A's lease expired",
    )
    late.go.touch()
    assert late.outcome()["state"] == JobState.DELIVERED.value

    started = events(engine, "job.started")
    assert [s["worker"] for s in started] == ["worker-a", "worker-c"]
    assert started[0]["holder"] == dead_holder
    assert started[1]["took_over_from"] == dead_holder
    assert len(events(engine, "job.inferred")) == 1
    assert len(events(engine, "job.delivered")) == 1
    (received,) = pacs.received().values()
    assert received == Counter({"SEG": 1, "SR": 1}), f"expected one SEG and one SR: {received}"
    job = the_job(engine, job_id)
    assert job.state == JobState.DELIVERED and job.attempts == 2
    assert job.claimed_by is None
