"""A partial series is never processed silently: gaps in slice positions or instance numbers,
or fewer instances than Images in Acquisition, hold the study (reason on the study page and
in the audit) until late instances fill the gap, or fail its job with the reason past the
hold deadline. Real DICOM through the real listener and ingest; SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from pydicom.uid import generate_uid
from sqlalchemy import Engine, select

from gateway.assembly import StudyAssembler
from gateway.audit import utcnow
from gateway.jobs.router import StudyRouter
from gateway.models import AuditEvent, Instance, Job, JobState, Study
from gateway.routing.completeness import slice_gaps
from gateway.settings import GatewaySettings
from gateway.web import create_app
from gateway.web.users import Role, create_user
from tests.conftest import RunningGateway, make_settings
from tests.dicom_samples import ct_instance, encode
from tests.routing.studies import tilted
from tests.scu import send_files
from tests.web.conftest import PASSWORD, sign_in

RULES = [{"name": "chest-ct", "conditions": [{"attribute": "modality", "value": "CT"}]}]

# 80 axial slices 1.25 mm apart from z=-150; a sender that stopped and came back lost
# slices 25-60 (z=-118.75 to -75.0): the gap runs from z=-120.0 to z=-73.75.
SPACING = 1.25
ALL = list(range(80))
MISSING = list(range(25, 61))
GAP_REASON = (
    "expected slice spacing 1.25 mm, found a 46.25 mm gap between z=-120.0 and z=-73.8 "
    "(about 36 of 80 slices missing)"
)
NUMBERS_REASON = "expected instance numbers 1 to 80 without a break, found 36 missing (26-61)"


@dataclass
class Scan:
    study_uid: str
    series_uid: str
    folder: Path

    def write(
        self,
        indices: Sequence[int],
        z: Callable[[int], float],
        *,
        images_in_acquisition: int | None = None,
        orientation: list[float] | None = None,
    ) -> list[Path]:
        paths = []
        for index in indices:
            ds = ct_instance(self.study_uid, self.series_uid, index, rows=8, columns=8)
            ds.ImagePositionPatient = [0.0, 0.0, z(index)]
            if orientation is not None:
                ds.ImageOrientationPatient = orientation
            if images_in_acquisition is not None:
                ds.ImagesInAcquisition = images_in_acquisition
            ds.AcquisitionNumber = 1
            path = self.folder / f"{index:04d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode(ds))
            paths.append(path)
        return paths


def new_scan(tmp_path: Path) -> Scan:
    study_uid = generate_uid()
    return Scan(study_uid, generate_uid(), tmp_path / study_uid)


def z_uniform(index: int) -> float:
    return -150.0 + SPACING * index


class Sent(list[tuple[int, str]]):
    def __call__(self, job_id: int, priority: str) -> None:
        self.append((job_id, priority))


@dataclass
class Site:
    gateway: RunningGateway
    settings: GatewaySettings
    engine: Engine
    router: StudyRouter
    sent: Sent

    def send(self, paths: list[Path]) -> None:
        statuses = send_files(self.gateway.port, paths, calling_ae="CTSCANNER1")
        assert statuses == [0] * len(paths), f"expected every C-STORE to succeed, found {statuses}"

    def complete_and_route(self) -> list[int]:
        StudyAssembler(self.engine, 0.001).complete_quiet_studies(
            now=utcnow() + timedelta(seconds=5)
        )
        return self.router.route_complete_studies()

    def audit(self, study_uid: str, kind: str) -> list[dict[str, object]]:
        with self.engine.connect() as connection:
            return [
                dict(d or {})
                for d in connection.execute(
                    select(AuditEvent.detail)
                    .where(AuditEvent.study_instance_uid == study_uid, AuditEvent.kind == kind)
                    .order_by(AuditEvent.id)
                ).scalars()
            ]

    def jobs(self, study_uid: str) -> list[Job]:
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(Job).where(Job.study_instance_uid == study_uid).order_by(Job.id)
                ).all()
            )

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
) -> Callable[[float], Site]:
    """A listener whose own assembly and router stay idle (the test drives them), and a
    signed-in viewer for the study page; `hold_s` is the series completeness hold."""

    def make(hold_s: float) -> Site:
        configured = make_settings(
            settings.data_dir,
            settings.sqlalchemy_url,
            assembly={"quiet_period_s": 3600},
            queue={"router_poll_interval_s": 3600, "broker_url": "redis://127.0.0.1:1/0"},
            web={"session_cookie_secure": False},
            routing={"rules": RULES, "series_completeness": {"hold_s": hold_s}},
        )
        create_user(engine, configured.web, "viewer", PASSWORD, Role.VIEWER, actor="test")
        sent = Sent()
        router = StudyRouter(configured, engine, sent)
        router.seed()
        return Site(start_gateway(configured), configured, engine, router, sent)

    return make


def hold_a_study_with_a_missing_run(site: Site, scan: Scan) -> None:
    site.send(scan.write([i for i in ALL if i not in MISSING], z_uniform))
    assert site.complete_and_route() == []  # held: no job
    assert site.jobs(scan.study_uid) == []


def test_a_missing_middle_run_holds_the_study_with_the_reason_shown(
    site_with: Callable[[float], Site], tmp_path: Path
) -> None:
    site = site_with(3600)
    scan = new_scan(tmp_path)
    hold_a_study_with_a_missing_run(site, scan)
    with site.engine.connect() as connection:
        positions = connection.execute(
            select(Instance.slice_position).where(Instance.file_path.contains(scan.series_uid))
        ).scalars()
        assert sorted(positions) == [z_uniform(i) for i in ALL if i not in MISSING]
        study = connection.execute(
            select(Study).where(Study.study_instance_uid == scan.study_uid)
        ).one()
    assert study.series_hold_reason == f"{GAP_REASON}; {NUMBERS_REASON}"
    assert study.series_held_at is not None
    (held,) = site.audit(scan.study_uid, "study.held")
    assert held == {"series": scan.series_uid, "reason": study.series_hold_reason, "hold_s": 3600}
    page = site.study_page(scan.study_uid)
    assert 'id="series-hold"' in page
    assert GAP_REASON in page and NUMBERS_REASON in page
    assert site.router.fail_overdue_holds() == []  # not yet past the hold
    site.router.dispatch_queued()
    assert site.sent == []  # nothing reached the broker


def test_a_late_instance_filling_the_gap_releases_the_study(
    site_with: Callable[[float], Site], tmp_path: Path
) -> None:
    site = site_with(3600)
    scan = new_scan(tmp_path)
    hold_a_study_with_a_missing_run(site, scan)
    site.send(scan.write(MISSING[:-1], z_uniform))  # all but one: still a gap
    assert site.complete_and_route() == []
    with site.engine.connect() as connection:
        reason = connection.execute(
            select(Study.series_hold_reason).where(Study.study_instance_uid == scan.study_uid)
        ).scalar()
    assert reason is not None and "between z=-76.2 and z=-73.8" in reason
    site.send(scan.write(MISSING[-1:], z_uniform))
    (job_id,) = site.complete_and_route()
    (job,) = site.jobs(scan.study_uid)
    assert (job.id, job.state, job.generation) == (job_id, JobState.QUEUED, 3)
    assert job.series_instance_uid == scan.series_uid
    (released,) = site.audit(scan.study_uid, "study.released")
    assert released["series"] == scan.series_uid
    assert len(site.audit(scan.study_uid, "study.held")) == 2
    assert len(site.audit(scan.study_uid, "job.queued")) == 1
    page = site.study_page(scan.study_uid)
    assert 'id="series-hold"' not in page
    assert site.router.dispatch_queued() == 1 and site.sent == [(job_id, "routine")]


def test_past_the_hold_deadline_the_job_fails_with_the_reason(
    site_with: Callable[[float], Site], tmp_path: Path
) -> None:
    site = site_with(0.5)
    scan = new_scan(tmp_path)
    hold_a_study_with_a_missing_run(site, scan)
    deadline = time.monotonic() + 10
    made: list[int] = []
    while not made and time.monotonic() < deadline:  # poll: the deadline is 0.5 s away
        made = site.router.fail_overdue_holds()
        time.sleep(0.05)
    (job_id,) = made
    (job,) = site.jobs(scan.study_uid)
    assert job.state == JobState.FAILED and job.finished_at is not None
    expected = (
        f"incomplete series {scan.series_uid}: {GAP_REASON}; {NUMBERS_REASON}; "
        "no instance filled it within 0.5 s"
    )
    assert job.last_error == expected
    (failed,) = site.audit(scan.study_uid, "job.failed")
    assert failed["reason"] == expected and failed["job"] == job_id
    page = site.study_page(scan.study_uid)
    assert 'id="series-hold"' not in page
    assert f"Last error: {expected}" in page
    assert site.router.fail_overdue_holds() == []  # once
    assert site.router.dispatch_queued() == 0 and site.sent == []
    # The missing slices arrive after all: the study runs (the failed job never started).
    site.send(scan.write(MISSING, z_uniform))
    (rerun,) = site.complete_and_route()
    assert [j.state for j in site.jobs(scan.study_uid)] == [JobState.FAILED, JobState.QUEUED]
    assert site.jobs(scan.study_uid)[1].id == rerun


def test_fewer_instances_than_images_in_acquisition_are_caught(
    site_with: Callable[[float], Site], tmp_path: Path
) -> None:
    """The sender died after 12 of 40 sent in order: positions and numbers are contiguous;
    only Images in Acquisition says more was coming. With hold_s = 0 it fails at once."""
    site = site_with(0)
    scan = new_scan(tmp_path)
    site.send(scan.write(range(12), z_uniform, images_in_acquisition=40))
    assert len(site.complete_and_route()) == 1
    (job,) = site.jobs(scan.study_uid)
    reason = "expected 40 instances (Images in Acquisition), found 12"
    assert job.state == JobState.FAILED
    assert job.last_error == f"incomplete series {scan.series_uid}: {reason}"
    assert site.audit(scan.study_uid, "study.held") == []  # no hold with hold_s = 0
    assert f"Last error: incomplete series {scan.series_uid}: {reason}" in site.study_page(
        scan.study_uid
    )


def test_uneven_but_complete_series_pass(
    site_with: Callable[[float], Site], tmp_path: Path
) -> None:
    """Legitimate irregular spacing: jitter up to 1.4x, then a step from 2.5 to 5 mm; and a
    tilted (gantry) series whose positions are measured along its own normal."""
    site = site_with(3600)
    jitter = [0.0]
    for i in range(1, 30):
        jitter.append(jitter[-1] + (1.0, 1.4, 1.2)[i % 3])
    stepped = [0.0]
    for i in range(1, 30):
        stepped.append(stepped[-1] + (2.5 if i < 20 else 5.0))
    uneven, steps, tilt = new_scan(tmp_path), new_scan(tmp_path), new_scan(tmp_path)
    site.send(uneven.write(range(30), lambda i: jitter[i], images_in_acquisition=30))
    site.send(steps.write(range(30), lambda i: stepped[i]))
    # Slices 2 mm apart along the normal of a 20 degree tilt: IPP advances 2/cos(20) in z.
    cos20 = 0.9396926207859084
    site.send(tilt.write(range(20), lambda i: 2.0 * i / cos20, orientation=tilted(20)))
    made = site.complete_and_route()
    assert len(made) == 3
    for scan in (uneven, steps, tilt):
        (job,) = site.jobs(scan.study_uid)
        assert job.state == JobState.QUEUED, job.last_error
        assert site.audit(scan.study_uid, "study.held") == []
    with site.engine.connect() as connection:
        tilted_positions = sorted(
            connection.execute(
                select(Instance.slice_position).where(Instance.file_path.contains(tilt.series_uid))
            ).scalars()
        )
    assert tilted_positions == pytest.approx([2.0 * i for i in range(20)], abs=1e-6)


def test_gap_rules_on_positions() -> None:
    """The pure rule: a gap is wider than 1.5x the median spacing and 1.5x its neighbours."""
    ones = [float(i) for i in range(20)]
    assert slice_gaps(ones, 1.5) == []
    assert slice_gaps(ones + ones, 1.5) == []  # duplicates (two stacks) are not gaps
    two_gaps = [p for p in ones if p not in (7.0, 8.0, 10.0, 11.0)]  # one slice between
    assert [(g.start, g.end, g.missing) for g in slice_gaps(two_gaps, 1.5)] == [
        (6.0, 9.0, 2),
        (9.0, 12.0, 2),
    ]
    # 2.5 mm slices, then 5 mm ones: wider than 1.5x the median, not than the neighbours
    steps = [2.5 * i for i in range(20)] + [47.5 + 5.0 * i for i in range(1, 10)]
    assert slice_gaps(steps, 1.5) == []
    assert slice_gaps([0.0, 10.0], 1.5) == []  # one spacing says nothing
