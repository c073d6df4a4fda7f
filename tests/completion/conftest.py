"""The gateway served in-process with a long quiet period (300 s), so only a completion
signal can complete a study within the tests' seconds. The gateway's own router polls every
hour, so it routes only when a completion signal wakes it; otherwise the test drives its own
router."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from gateway.jobs.router import StudyRouter
from gateway.models import AuditEvent, Job, StorageCommitment, Study
from gateway.settings import GatewaySettings
from gateway.web.app import create_app
from gateway.web.users import Role, create_user
from tests.conftest import RunningGateway, free_port, make_settings
from tests.web.conftest import PASSWORD, sign_in

QUIET_PERIOD_S = 300.0
RULES = [{"name": "chest-ct", "conditions": [{"attribute": "modality", "value": "CT"}]}]


class Sent(list[tuple[int, str]]):
    def __call__(self, job_id: int, priority: str) -> None:
        self.append((job_id, priority))


@dataclass
class Site:
    gateway: RunningGateway
    settings: GatewaySettings
    engine: Engine
    router: StudyRouter

    @property
    def port(self) -> int:
        return self.gateway.port

    def study(self, study_uid: str) -> Any:
        with self.engine.connect() as connection:
            return connection.execute(
                select(Study).where(Study.study_instance_uid == study_uid)
            ).first()

    def wait_complete(self, study_uid: str, timeout_s: float) -> float:
        """Seconds until the study was complete; fails after `timeout_s`."""
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            row = self.study(study_uid)
            if row is not None and row.state == "complete":
                return time.monotonic() - started
            time.sleep(0.05)
        row = self.study(study_uid)
        raise AssertionError(
            f"expected study complete within {timeout_s} s, found "
            f"{None if row is None else row.state}"
        )

    def wait_reported(self, timeout_s: float = 10) -> list[str]:
        """Until every storage commitment's report was answered (so the simulator does not
        release while its N-EVENT-REPORT response is still on its way)."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self.engine.connect() as connection:
                states = list(connection.execute(select(StorageCommitment.state)).scalars())
            if all(s != "waiting" for s in states) or time.monotonic() > deadline:
                return states
            time.sleep(0.05)

    def jobs(self, study_uid: str) -> list[Any]:
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(Job).where(Job.study_instance_uid == study_uid).order_by(Job.id)
                ).all()
            )

    def wait_jobs(self, study_uid: str, timeout_s: float) -> list[Any]:
        """The study's jobs once there is one; fails after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not (jobs := self.jobs(study_uid)):
            if time.monotonic() > deadline:
                raise AssertionError(f"expected a job within {timeout_s} s, found none")
            time.sleep(0.05)
        return jobs

    def audit(self, kind: str) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            return [
                dict(d or {})
                for d in connection.execute(
                    select(AuditEvent.detail).where(AuditEvent.kind == kind).order_by(AuditEvent.id)
                ).scalars()
            ]

    def study_page(self, study_uid: str) -> str:
        app = create_app(self.settings, self.engine)
        app.config["TESTING"] = True
        client: FlaskClient = app.test_client()
        assert sign_in(client, "viewer") == 302
        response = client.get(f"/studies/{study_uid}")
        assert response.status_code == 200
        return response.get_data(as_text=True)


@pytest.fixture
def site_with(
    settings: GatewaySettings,
    engine: Engine,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
) -> Callable[..., Site]:
    users: list[str] = []

    def make(
        *,
        rules: list[dict[str, Any]] | None = None,
        quiet_period_s: float = QUIET_PERIOD_S,
        assembly_poll_s: float = 0.2,
        listener_processes: int = 1,
        **completion: Any,
    ) -> Site:
        configured = make_settings(
            settings.data_dir,
            settings.sqlalchemy_url,
            dicom={"port": free_port(), "listener_processes": listener_processes},
            assembly={"quiet_period_s": quiet_period_s, "poll_interval_s": assembly_poll_s},
            queue={"router_poll_interval_s": 3600, "broker_url": "redis://127.0.0.1:1/0"},
            web={"session_cookie_secure": False},
            routing={"rules": rules or RULES},
            completion={"commitment_wait_s": 1.0, **completion},
        )
        if not users:
            create_user(engine, configured.web, "viewer", PASSWORD, Role.VIEWER, actor="test")
            users.append("viewer")
        router = StudyRouter(configured, engine, Sent())
        router.seed()
        return Site(start_gateway(configured), configured, engine, router)

    return make
