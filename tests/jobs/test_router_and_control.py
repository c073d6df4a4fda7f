"""Complete studies to jobs (once per generation, after the commit), reasons recorded when a
study is not routed, urgent first, lost messages sent again; operator retry and cancel."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import Engine, insert, select, update

from gateway.assembly import StudyAssembler
from gateway.audit import utcnow
from gateway.jobs.control import JobActionRefused, cancel_job, retry_job
from gateway.jobs.router import StudyRouter
from gateway.models import AuditEvent, Delivery, DeliveryState, Job, JobState, RoutingRule
from gateway.settings import GatewaySettings
from tests.conftest import RunningGateway, make_settings
from tests.routing.studies import SentStudy, SeriesSpec, send_study
from tests.scu import send_files

RULES = [
    {
        "name": "urgent-chest",
        "priority": "urgent",
        "conditions": [
            {"attribute": "study_description", "operator": "contains", "value": "urgent"}
        ],
    },
    {"name": "chest-ct", "conditions": [{"attribute": "modality", "value": "CT"}]},
]


@pytest.fixture
def routed(
    settings: GatewaySettings,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
) -> tuple[RunningGateway, GatewaySettings]:
    """A listener whose own assembly and router stay idle: the test drives them."""
    configured = make_settings(
        settings.data_dir,
        settings.sqlalchemy_url,
        assembly={"quiet_period_s": 3600},
        queue={"router_poll_interval_s": 3600, "broker_url": "redis://127.0.0.1:6379/15"},
        routing={"rules": RULES, "series_selection": {"min_slices": 4}},
    )
    return start_gateway(configured), configured


class Sent(list[tuple[int, str]]):
    def __call__(self, job_id: int, priority: str) -> None:
        self.append((job_id, priority))


def complete_all(engine: Engine) -> None:
    StudyAssembler(engine, 0.001).complete_quiet_studies(now=utcnow() + timedelta(seconds=5))


def audit(engine: Engine, study_uid: str, kind: str) -> list[dict[str, object]]:
    with engine.connect() as connection:
        return [
            dict(d or {})
            for d in connection.execute(
                select(AuditEvent.detail).where(
                    AuditEvent.study_instance_uid == study_uid, AuditEvent.kind == kind
                )
            ).scalars()
        ]


def test_a_complete_study_becomes_one_job_sent_after_commit(
    routed: tuple[RunningGateway, GatewaySettings], engine: Engine, tmp_path: Path
) -> None:
    gateway, settings = routed
    sent_study = send_study(gateway, tmp_path, [SeriesSpec(1, 6), SeriesSpec(2, 2)])
    sent = Sent()
    router = StudyRouter(settings, engine, sent)
    router.seed()
    assert router.route_complete_studies() == []  # not complete yet
    complete_all(engine)
    (job_id,) = router.route_complete_studies()
    assert router.route_complete_studies() == []  # once per generation
    assert sent == []  # nothing sent before dispatch (after the commit)
    assert router.dispatch_queued() == 1
    assert sent == [(job_id, "routine")]
    assert router.dispatch_queued() == 0
    with engine.connect() as connection:
        job = connection.execute(select(Job).where(Job.id == job_id)).one()
    assert job.state == JobState.QUEUED and job.enqueued_at is not None
    assert job.series_instance_uid == sent_study.series_uids[1]  # 6 slices, not 2
    assert job.rule_name == "chest-ct" and job.generation == 1
    (routed_event,) = audit(engine, sent_study.study_uid, "study.routed")
    assert routed_event["rule"] == "chest-ct"
    assert len(audit(engine, sent_study.study_uid, "job.queued")) == 1


def test_not_routed_studies_say_why(
    routed: tuple[RunningGateway, GatewaySettings], engine: Engine, tmp_path: Path
) -> None:
    gateway, settings = routed
    mr = send_study(gateway, tmp_path / "mr", [SeriesSpec(1, 6, modality="MR")])
    short = send_study(gateway, tmp_path / "short", [SeriesSpec(1, 2)])
    router = StudyRouter(settings, engine, Sent())
    router.seed()
    complete_all(engine)
    (failed_job,) = router.route_complete_studies()
    (reason,) = audit(engine, mr.study_uid, "study.not_routed")
    assert "no enabled rule matched" in str(reason["reason"])
    # A rule matched but its pipeline takes no series of the study: a job failed at once
    # with the reason code (visible, never retried by itself), not a silent skip.
    with engine.connect() as connection:
        job = connection.execute(select(Job).where(Job.id == failed_job)).one()
    assert (job.study_instance_uid, job.state) == (short.study_uid, JobState.FAILED)
    assert job.last_error.startswith("not_accepted.slice_count: rule 'chest-ct'"), job.last_error
    assert "min_slices 4" in job.last_error
    (event,) = audit(engine, short.study_uid, "job.failed")
    assert str(event["reason"]).startswith("not_accepted.slice_count")


def test_urgent_jobs_are_sent_first_and_lost_messages_again(
    routed: tuple[RunningGateway, GatewaySettings], engine: Engine, tmp_path: Path
) -> None:
    gateway, settings = routed
    send_study(gateway, tmp_path / "a", [SeriesSpec(1, 5)])
    urgent = send_study(gateway, tmp_path / "b", [SeriesSpec(1, 5)], study_description="URGENT CT")
    sent = Sent()
    router = StudyRouter(settings, engine, sent)
    router.seed()
    complete_all(engine)
    assert len(router.route_complete_studies()) == 2
    router.dispatch_queued()
    assert [priority for _, priority in sent] == ["urgent", "routine"]
    with engine.connect() as connection:
        urgent_job = connection.execute(
            select(Job.id).where(Job.study_instance_uid == urgent.study_uid)
        ).scalar_one()
    assert sent[0][0] == urgent_job
    # A message lost (a Redis restart without persistence): sent again once stale.
    with engine.begin() as connection:
        connection.execute(update(Job).values(enqueued_at=utcnow() - timedelta(seconds=3600)))
    sent.clear()
    assert router.dispatch_queued() == 2
    assert len(sent) == 2


def test_late_instances_rerun_only_when_the_rule_says_so(
    routed: tuple[RunningGateway, GatewaySettings], engine: Engine, tmp_path: Path
) -> None:
    gateway, settings = routed
    study = send_study(gateway, tmp_path / "a", [SeriesSpec(1, 5)])
    router = StudyRouter(settings, engine, Sent())
    router.seed()
    complete_all(engine)
    assert len(router.route_complete_studies()) == 1
    # A late instance of the same series: the study is updated, then complete again.
    assert send_files(gateway.port, [late_instance(study, tmp_path)], calling_ae="CT1") == [0]
    complete_all(engine)
    assert router.route_complete_studies() == []  # chest-ct has rerun_on_update off
    reasons = audit(engine, study.study_uid, "study.not_routed")
    assert any("rerun_on_update is off" in str(r["reason"]) for r in reasons)
    # With rerun_on_update on, the next generation gets its own job.
    with engine.begin() as connection:
        connection.execute(update(RoutingRule).values(rerun_on_update=True))
    assert send_files(gateway.port, [late_instance(study, tmp_path)], calling_ae="CT1") == [0]
    complete_all(engine)
    (job_id,) = router.route_complete_studies()
    with engine.connect() as connection:
        assert connection.execute(select(Job.generation).where(Job.id == job_id)).scalar() == 3


def late_instance(study: SentStudy, tmp_path: Path) -> Path:
    """One more instance of the study's first series, as a late arrival."""
    paths = next(iter(study.paths.values()))
    ds = pydicom.dcmread(paths[0])
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    out = tmp_path / f"late-{ds.SOPInstanceUID}.dcm"
    ds.save_as(out)
    return out


def _job(engine: Engine, state: JobState, results: list[str] | None = None) -> int:
    now = utcnow()
    with engine.begin() as connection:
        from gateway.models import Study

        study_id = connection.execute(
            insert(Study)
            .values(
                study_instance_uid="1.2.3.4",
                state="complete",
                instance_count=1,
                first_received_at=now,
                last_received_at=now,
                completion_count=1,
            )
            .returning(Study.id)
        ).scalar_one()
        job_id = connection.execute(
            insert(Job)
            .values(
                study_id=study_id,
                study_instance_uid="1.2.3.4",
                generation=1,
                rule_name="r",
                pipeline="lung_nodules",
                model_key="m",
                series_instance_uid="1.2.3.4.5",
                destinations=["pacs"],
                priority="routine",
                state=state,
                attempts=3,
                last_error="boom",
                enqueued_at=now,
                created_at=now,
                updated_at=now,
                summary={"results": [{"sop_instance_uid": u} for u in results or []]},
            )
            .returning(Job.id)
        ).scalar_one()
        for uid in results or []:
            connection.execute(
                insert(Delivery).values(
                    destination="pacs",
                    study_instance_uid="1.2.3.4",
                    series_instance_uid="1.2.3.4.6",
                    sop_instance_uid=uid,
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                    kind="seg",
                    file_path="x.dcm",
                    state=DeliveryState.FAILED,
                    attempts=8,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
    return int(job_id)


def test_retry_requeues_a_failed_job_and_its_failed_deliveries(engine: Engine) -> None:
    job_id = _job(engine, JobState.FAILED, results=["1.2.3.4.7"])
    retry_job(engine, job_id, "alice")
    with engine.connect() as connection:
        job = connection.execute(select(Job).where(Job.id == job_id)).one()
        delivery = connection.execute(select(Delivery)).one()
        actor = connection.execute(
            select(AuditEvent.actor).where(AuditEvent.kind == "job.requeued")
        ).scalar_one()
    assert job.state == JobState.QUEUED and job.enqueued_at is None and job.last_error is None
    assert delivery.state == DeliveryState.PENDING and delivery.attempts == 0
    assert actor == "alice"
    with pytest.raises(JobActionRefused, match=r"expected job \d+ failed or cancelled"):
        retry_job(engine, job_id, "alice")


def test_cancel_stops_an_unfinished_job_only(engine: Engine) -> None:
    job_id = _job(engine, JobState.RUNNING)
    cancel_job(engine, job_id, "bob")
    with engine.connect() as connection:
        assert connection.execute(select(Job.state)).scalar_one() == JobState.CANCELLED
    with pytest.raises(JobActionRefused, match="found cancelled"):
        cancel_job(engine, job_id, "bob")
    with pytest.raises(JobActionRefused, match="expected job 999 to exist"):
        cancel_job(engine, 999, "bob")
