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
from sqlalchemy import create_engine, select

from gateway.models import Job, JobState
from gateway.phantom import make_phantom, write_ct_series
from tests.conftest import GATEWAY_AE, REPO
from tests.deploy.compose_stack import (
    LONG_RUNNING,
    PACS_PORT,
    PORTS,
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
        up = stack.compose("up", "-d", timeout_s=400)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        for service in LONG_RUNNING:
            stack.wait_running(service, 60)
        yield stack
    finally:
        stack.compose("down", "-v", timeout_s=180)


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
        top = stack.podman("top", name, "uid", "user", "args")
        assert top.returncode == 0, top.stderr
        rows = [line.split(None, 2) for line in top.stdout.splitlines()[1:] if line.strip()]
        assert rows, f"{service}: expected processes, found none"
        root = [row for row in rows if row[0] == "0" or row[1] == "root"]
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


def _wait(predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"expected {what} within {timeout_s:g} s, found it not")


def test_worker_container_killed_mid_job_delivers_once(
    stack: ComposeStack, pacs: CountingPACS, tmp_path: Path
) -> None:
    engine = create_engine(stack.database_url())
    try:
        study_uid = _send_study(tmp_path)
        job = _wait(
            lambda: (j := _job(engine, study_uid)) is not None and j.started_at is not None and j,
            120,
            "the job started by the worker",
        )
        assert job.inferred_at is None, "inference finished before the kill: make it slower"
        killed = stack.podman("kill", "--signal", "KILL", stack.container("worker"))
        assert killed.returncode == 0, killed.stderr
        time.sleep(2)
        stack.podman("start", stack.container("worker"))  # unless its restart policy did
        stack.wait_running("worker", 60)
        job = _wait(
            lambda: (
                (j := _job(engine, study_uid)) is not None and j.state == JobState.DELIVERED and j
            ),
            200,
            "the job run again and delivered",
        )
        time.sleep(5)  # a duplicate delivery would arrive now
        assert job.attempts >= 2, "expected the job to run again after the worker was lost"
        assert (pacs.count(study_uid, "SEG"), pacs.count(study_uid, "SR")) == (1, 1), (
            f"expected one SEG and one SR received, found {dict(pacs.received)}"
        )
    finally:
        engine.dispose()
