"""The images and deploy/compose.yaml, built and run with podman: `pacs-gateway selftest`
through the running stack, every health check healthy, no process as root, and a worker
container killed mid-job still delivers exactly one SEG and one SR."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]
from sqlalchemy import Engine, create_engine, select

from gateway.models import AuditEvent, Job, JobState
from gateway.phantom import make_phantom, write_ct_series
from tests.conftest import GATEWAY_AE, REPO
from tests.deploy.compose_stack import (
    LONG_RUNNING,
    PACS_PORT,
    PORTS,
    SELFTEST_PORT,
    ComposeStack,
    CountingPACS,
    run,
)

pytestmark = pytest.mark.slow
CONFIG = "/etc/pacs-gateway/gateway.toml"


@pytest.fixture(scope="module")
def pacs() -> Iterator[CountingPACS]:
    counting = CountingPACS(PACS_PORT)
    server = counting.start()
    yield counting
    server.shutdown()


@pytest.fixture(scope="module")
def stack(pacs: CountingPACS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    started = time.monotonic()
    built = run(["bash", str(REPO / "scripts" / "container-build.sh")], 900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    print(f"images built in {time.monotonic() - started:.0f} s:\n{built.stdout}")
    stack = ComposeStack(tmp_path_factory.mktemp("compose"))
    stack.write_site_files()
    stack.compose("down", "-v", timeout_s=120)  # a previous run's leftovers
    try:
        started = time.monotonic()
        stack.up(timeout_s=240)
        print(f"stack up in {time.monotonic() - started:.0f} s")
        yield stack
    finally:
        down = stack.compose("down", "-v", timeout_s=180)
        assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]


def test_selftest_health_checks_and_no_root(stack: ComposeStack) -> None:
    migrate = stack.podman("inspect", "--format", "{{.State.ExitCode}}", stack.container("migrate"))
    assert migrate.stdout.strip() == "0", stack.logs("migrate")
    selftest = stack.podman(
        "exec", stack.container("listener"), "pacs-gateway", "selftest", "--config", CONFIG,
        "--timeout", "240", timeout_s=300,
    )  # fmt: skip
    assert selftest.returncode == 0 and "selftest passed" in selftest.stdout, (
        selftest.stdout + selftest.stderr + stack.logs("worker") + stack.logs("triton")
    )
    for service in LONG_RUNNING:
        name = stack.container(service)
        check = stack.podman("healthcheck", "run", name, timeout_s=60)
        status = stack.podman("inspect", "--format", "{{.State.Healthcheck.Status}}", name)
        assert check.returncode == 0 and status.stdout.strip() == "healthy", (
            f"{service}: expected healthy, found {status.stdout.strip()!r} "
            f"({check.stdout}{check.stderr})"
        )
        # podman's own descriptors (the images have no ps): the user in the container and
        # on the host, both by name, or by number where the name is unknown
        top = stack.podman("top", name, "pid", "user", "huser", "args")
        assert top.returncode == 0, top.stderr
        rows = [line.split(None, 3) for line in top.stdout.splitlines()[1:] if line.strip()]
        assert rows, f"{service}: expected processes, found none"
        root = [row for row in rows if {"0", "root"} & {row[1], row[2]}]
        assert not root, f"{service}: expected no process as root, found {root}"


def _send_study(tmp: Path) -> str:
    phantom = make_phantom(
        7301, shape=(96, 256, 256), spacing=(2.5, 1.2, 1.2), n_nodules=2,
        nodule_diameter_mm=(12.0, 20.0),
    )  # fmt: skip
    paths = write_ct_series(phantom, tmp)
    ae = AE(ae_title="SELFTEST")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", PORTS["DICOM_PORT"], ae_title=GATEWAY_AE)
    assert assoc.is_established
    try:
        for path in paths:
            assert assoc.send_c_store(path).Status == 0x0000
    finally:
        assoc.release()
    return str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)


def _job(engine: object, study_uid: str) -> Job | None:
    with engine.connect() as connection:  # type: ignore[attr-defined]
        return connection.execute(select(Job).where(Job.study_instance_uid == study_uid)).first()


def _first_task_id(engine: Engine, study_uid: str) -> str:
    """The Celery task of the job's first attempt (the one the kill interrupted)."""
    with engine.connect() as connection:
        detail = connection.execute(
            select(AuditEvent.detail)
            .where(AuditEvent.kind == "job.started", AuditEvent.study_instance_uid == study_uid)
            .order_by(AuditEvent.id)
        ).scalar()
    assert detail and detail.get("task"), (
        f"expected a job.started event with a task, found {detail}"
    )
    return str(detail["task"])


def _wait(predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"expected {what} within {timeout_s:g} s, found it not")


@pytest.fixture
def selftest_pacs() -> Iterator[CountingPACS]:
    """The `selftest` destination, which every rule of the compose settings also sends to:
    a second counting SCP while `pacs-gateway selftest` is not the one listening there."""
    counting = CountingPACS(SELFTEST_PORT)
    server = counting.start()
    yield counting
    server.shutdown()


def test_worker_container_killed_mid_job_delivers_once(
    stack: ComposeStack, pacs: CountingPACS, selftest_pacs: CountingPACS, tmp_path: Path
) -> None:
    """SIGKILL of the worker container while its job runs (no warm shutdown, no ack, the
    job's lease held): the restarted worker takes the job over once the broker redelivers
    it (visibility timeout) or the router's sweep queues it again, and each destination
    receives one SEG and one SR."""
    engine = create_engine(stack.database_url())
    try:
        study_uid = _send_study(tmp_path)
        job = _wait(
            lambda: (j := _job(engine, study_uid)) is not None and j.started_at is not None and j,
            120,
            "the job started by the worker",
        )
        killed = stack.podman("kill", "--signal", "KILL", stack.container("worker"))
        assert killed.returncode == 0, killed.stderr
        killed_at = time.monotonic()
        at_kill = _job(engine, study_uid)
        assert at_kill is not None and at_kill.state in (JobState.RUNNING, JobState.INFERRED), (
            f"expected the job running when the worker was killed, found {at_kill}: "
            "make the study larger"
        )
        time.sleep(2)
        stack.podman("start", stack.container("worker"))  # unless its restart policy did
        stack.wait_running("worker", 60)
        try:
            job = _wait(
                lambda: (
                    (j := _job(engine, study_uid)) is not None
                    and j.state == JobState.DELIVERED
                    and j
                ),
                150,
                "the job run again and delivered",
            )
        except AssertionError as exc:
            found = _job(engine, study_uid)
            raise AssertionError(f"{exc}: {found}\n{stack.logs('worker')}") from None
        delivered_s = time.monotonic() - killed_at
        # The killed task's own message comes back too (the broker's visibility timeout,
        # later than the sweep): count only once the worker has handled it as well.
        task = _first_task_id(engine, study_uid)
        done = f"process_job[{task}] succeeded"
        _wait(
            lambda: done in stack.logs("worker", tail=-1),
            max(10.0, 180 - (time.monotonic() - killed_at)),
            f"the killed task {task} redelivered by the broker and handled",
        )
        redelivered_s = time.monotonic() - killed_at
        time.sleep(5)  # a duplicate delivery would arrive now
        assert job.attempts >= 2, f"expected the job run again after the kill, found {job}"
        for destination in (pacs, selftest_pacs):
            received = (destination.count(study_uid, "SEG"), destination.count(study_uid, "SR"))
            assert received == (1, 1), (
                f"expected one SEG and one SR received on port {destination.port}, found "
                f"{dict(destination.received)}"
            )
        print(
            f"killed in {at_kill.state}; delivered {delivered_s:.0f} s after the kill, the "
            f"killed task's message handled again after {redelivered_s:.0f} s"
        )
    finally:
        engine.dispose()
