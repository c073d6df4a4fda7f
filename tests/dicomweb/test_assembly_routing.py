"""Instances stored by STOW-RS take the C-STORE path on: the study is assembled after its
quiet period and routed by the rules (the client's name is the calling AE title a rule can
match), and a job is queued for the series the pipeline takes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from pydicom.uid import generate_uid
from sqlalchemy import select

from gateway.assembly import StudyAssembler
from gateway.audit import utcnow
from gateway.jobs.router import StudyRouter
from gateway.models import AuditEvent, Job, JobState, Study, StudyState
from tests.dicom_samples import ct_instance, encode
from tests.dicomweb.server import WebServer
from tests.dicomweb.stow_helpers import stow

RULES = [
    {
        "name": "from-stow-client",
        "conditions": [
            {"attribute": "calling_ae", "value": "STOWCLIENT"},
            {"attribute": "modality", "value": "CT"},
        ],
    }
]


class Sent(list[tuple[int, str]]):
    def __call__(self, job_id: int, priority: str) -> None:
        self.append((job_id, priority))


def test_stowed_instances_are_assembled_and_routed_to_a_job(
    start_web: Callable[..., WebServer],
) -> None:
    web = start_web(
        assembly={"quiet_period_s": 3600},
        queue={"router_poll_interval_s": 3600, "broker_url": "redis://127.0.0.1:6379/15"},
        routing={"rules": RULES, "series_selection": {"min_slices": 4}},
    )
    study, series = generate_uid(), generate_uid()
    parts = [encode(ct_instance(study, series, i, rows=16, columns=16)) for i in range(6)]
    assert (
        stow(
            web,
            parts,
            web.token(
                "STOWCLIENT",
            ),
        ).status
        == 200
    )
    sent = Sent()
    router = StudyRouter(web.settings, web.engine, sent)
    router.seed()
    assert router.route_complete_studies() == []  # still within its quiet period
    later = utcnow() + timedelta(seconds=3601)
    StudyAssembler(web.engine, 3600).complete_quiet_studies(now=later)
    (job_id,) = router.route_complete_studies()
    assert router.dispatch_queued() == 1 and sent == [(job_id, "routine")]
    with web.engine.connect() as connection:
        row = connection.execute(select(Study.__table__)).one()
        job = connection.execute(select(Job.__table__).where(Job.id == job_id)).one()
        kinds = list(
            connection.execute(
                select(AuditEvent.kind).where(AuditEvent.study_instance_uid == study)
            ).scalars()
        )
    assert row.state == StudyState.COMPLETE.value and row.first_calling_ae == "STOWCLIENT"
    assert (job.rule_name, job.series_instance_uid, job.state) == (
        "from-stow-client",
        series,
        JobState.QUEUED.value,
    )
    assert kinds.count("instance.stored") == 6
    assert {"study.complete", "study.routed", "job.queued"} <= set(kinds)
