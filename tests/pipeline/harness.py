"""Real parts for the pipeline tests: a private Redis (so it can be restarted), the gateway
(`serve`) and Celery workers as OS processes, Triton, Orthanc as the PACS."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import psutil
import pytest
import redis
from pydicom.uid import UID, SegmentationStorage
from sqlalchemy import Engine, select

from gateway.models import TERMINAL_JOB_STATES, AuditEvent, Delivery, DeliveryState, Job
from gateway.settings import GatewaySettings
from tests.conftest import REPO, settings_environment
from tests.integration.orthanc import Orthanc


class RedisServer:
    """redis-server on its own port and directory; append-only file on, so a restart keeps
    what was queued (as the README tells operators to configure)."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"redis://127.0.0.1:{port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("expected redis-server on PATH (Debian package redis-server), found none")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.workdir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        wait_until(lambda: _ping(client), 20, "redis-server to answer PING")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=20)

    def pending_tasks(self) -> int:
        """Task messages that could still run: waiting in any queue list (priority steps
        included) or delivered to a worker and not yet acknowledged (kombu's `unacked`)."""
        client = redis.Redis(port=self.port)
        lengths = [client.llen(n) for n in client.scan_iter() if client.type(n) == b"list"]
        return sum(cast(int, n) for n in lengths) + cast(int, client.hlen("unacked"))

    def queued(self, queue: str) -> int:
        """Messages waiting in `queue` (one Redis list per priority step)."""
        client = redis.Redis(port=self.port)
        names = [queue.encode(), *client.scan_iter(match=f"{queue}:*")]
        lengths = [client.llen(n) for n in names if client.type(n) == b"list"]
        return sum(cast(int, n) for n in lengths)


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"expected {what} within {timeout_s:g}s, found it did not")
        time.sleep(0.2)


class Process:
    """A `pacs-gateway` subcommand as a real process with the test's settings."""

    def __init__(self, command: str, settings: GatewaySettings, log: Path) -> None:
        self.command = command
        self.settings = settings
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", self.command],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=settings_environment(self.settings),
            )
        return self

    def children(self) -> list[psutil.Process]:
        assert self.process is not None
        return psutil.Process(self.process.pid).children(recursive=True)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for child in self.children():
                    child.kill()
                self.process.kill()
                self.process.wait(timeout=10)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def jobs(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(Job).order_by(Job.id)).all())


def deliveries(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(Delivery).order_by(Delivery.id)).all())


def audit_kinds_of_study(engine: Engine, study_uid: str) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(AuditEvent.kind)
                .where(AuditEvent.study_instance_uid == study_uid)
                .order_by(AuditEvent.id)
            ).scalars()
        )


def results_in_pacs(pacs: Orthanc, study_uid: str) -> dict[str, list[str]]:
    """Modality ('SEG', 'SR') -> Orthanc instance IDs in the study."""
    found = pacs.post_json(
        "/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
    )
    assert found.status == 200
    out: dict[str, list[str]] = {}
    for study_id in found.json():
        for series in pacs.get_json(f"/studies/{study_id}/series"):
            modality = series["MainDicomTags"].get("Modality", "")
            out.setdefault(modality, []).extend(series["Instances"])
    return out


def results_received(pacs: Orthanc, study_uid: str) -> Counter[str]:
    """'SEG' / 'SR' -> how many C-STOREs of such objects of the study the PACS received. A
    copy sent again counts again, although Orthanc keeps one instance."""
    return Counter(_result_kind(row.sop_class_uid) for row in pacs.received(study_uid))


def _result_kind(sop_class_uid: str) -> str:
    if sop_class_uid == SegmentationStorage:
        return "SEG"
    name = UID(sop_class_uid).name
    return "SR" if name.endswith("SR Storage") else name or sop_class_uid


def assert_received_once(pacs: Orthanc, study_uid: str) -> None:
    received = results_received(pacs, study_uid)
    assert received == {"SEG": 1, "SR": 1}, (
        f"expected the PACS to receive one SEG and one SR C-STORE of {study_uid}, "
        f"found {dict(received)}"
    )


def settled(engine: Engine, redis_server: RedisServer) -> bool:
    """Nothing more can reach the PACS: every job finished, no delivery pending, and no task
    message left in the broker (queued or unacknowledged) that could run a job again.
    Counts at the PACS taken after this are final, without waiting for what does not come."""
    with engine.connect() as connection:
        rows = connection.execute(select(Job.state)).scalars().all()
        pending = connection.execute(
            select(Delivery.id).where(Delivery.state == DeliveryState.PENDING).limit(1)
        ).first()
    return (
        bool(rows)
        and all(state in TERMINAL_JOB_STATES for state in rows)
        and pending is None
        and redis_server.pending_tasks() == 0
    )


def wait_job_finished(engine: Engine, timeout_s: float = 30) -> list[Any]:
    """The jobs once none is unfinished: the results can reach the PACS a moment before the
    worker records the job delivered."""
    return list(
        wait_until(
            lambda: (
                (rows := jobs(engine))
                and all(j.state in TERMINAL_JOB_STATES for j in rows)
                and rows
            ),
            timeout_s,
            "every job finished",
        )
    )
