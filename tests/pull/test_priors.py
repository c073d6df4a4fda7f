"""Priors: a rule asks for the most recent prior of the same patient (same modality and body
part, within N years). The follow-up's job is not sent while it waits; the prior is found on
Orthanc by the Patient ID read from the stored follow-up (never logged or audited), fetched,
and recorded on the job; it is not routed itself. A prior that does not come in time is
recorded with the reason and the job goes on without it."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from gateway.jobs.router import StudyRouter
from gateway.models import JobPrior
from gateway.pull.priors import PriorResolver, claim_waiting
from gateway.settings import GatewaySettings
from tests.conftest import RunningGateway
from tests.pull.conftest import (
    PRIOR_PATIENT,
    Sent,
    SourcePacs,
    all_audit_text,
    audit_rows,
    complete_all,
    pull_settings,
    pulled_rows,
    source_config,
    stored_instances,
)
from tests.pull.studies import SourceStudy, make_study
from tests.scu import send_files


def prior_rule(**prior: Any) -> dict[str, Any]:
    return {
        "rules": [
            {
                "name": "chest-ct",
                "conditions": [{"attribute": "modality", "value": "CT"}],
                "prior": {"within_years": 5, "wait_s": 120, **prior},
            }
        ],
        "series_selection": {"min_slices": 2},
    }


def send_follow_up(gateway: RunningGateway, folder: Path) -> SourceStudy:
    """The follow-up of PRIOR_PATIENT (2026-01-15, CT chest), C-STOREd by a modality."""
    study = make_study("follow-up", study_date="20260115", patient_id=PRIOR_PATIENT)
    paths = [instance.write(folder) for instance in study.instances]
    assert send_files(gateway.port, paths, calling_ae="CTSCANNER") == [0] * len(paths)
    return study


def job_prior(engine: Engine) -> Any:
    with engine.connect() as connection:
        return connection.execute(select(JobPrior)).one()


def test_a_follow_up_waits_for_its_prior_and_records_which(
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    source_studies: dict[str, SourceStudy],
    listening_gateway: RunningGateway,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    configured = pull_settings(settings, source_config(source_pacs, "c-move"), routing=prior_rule())
    follow_up = send_follow_up(listening_gateway, tmp_path / "follow-up")
    complete_all(engine)
    sent = Sent()
    router = StudyRouter(configured, engine, sent)
    router.seed()
    (job_id,) = router.route_complete_studies()
    assert job_prior(engine).state == "waiting"
    assert router.dispatch_queued() == 0 and sent == []  # waits for its prior

    claim = claim_waiting(engine, lease_s=600)
    assert claim is not None and claim.job_id == job_id
    assert claim_waiting(engine, lease_s=600) is None  # one puller per prior
    assert PriorResolver(configured, engine).resolve(claim) == "found"

    # The most recent CT chest of the same patient within 5 years: not the 2025 head CT,
    # not the 2025 chest MR, not the older chest CTs, not another patient's later chest CT.
    prior = source_studies["prior"]
    recorded = job_prior(engine)
    assert (recorded.state, recorded.prior_study_instance_uid) == (
        "found",
        prior.study_instance_uid,
    )
    assert prior.sop_instance_uids <= stored_instances(engine)
    for other in ("older", "too-old", "head", "mr-chest", "other-patient"):
        assert not source_studies[other].sop_instance_uids & stored_instances(engine), other
    ((study_uid, purpose, state),) = [
        (r.study_instance_uid, r.purpose, r.state) for r in pulled_rows(engine)
    ]
    assert (study_uid, purpose, state) == (prior.study_instance_uid, "prior", "pulled")

    assert router.dispatch_queued() == 1 and sent == [(job_id, "routine")]
    (found,) = audit_rows(engine, "prior.found")
    assert found.detail == {"job": job_id, "prior": prior.study_instance_uid}

    # The prior completes like any study but is not routed (no job of its own).
    assert complete_all(engine) == [prior.study_instance_uid]
    assert router.route_complete_studies() == []
    (not_routed,) = audit_rows(engine, "study.not_routed")
    assert not_routed.study_instance_uid == prior.study_instance_uid
    assert "pulled as a prior" in not_routed.detail["reason"]

    # The Patient ID searched by is in no audit event and no log line.
    assert PRIOR_PATIENT not in all_audit_text(engine)
    assert f"job {job_id}: prior found" in caplog.text  # the log was captured
    assert PRIOR_PATIENT not in caplog.text
    (requested,) = audit_rows(engine, "prior.requested")
    assert requested.study_instance_uid == follow_up.study_instance_uid


def test_a_prior_that_does_not_come_in_time_lets_the_job_go_on_saying_why(
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    listening_gateway: RunningGateway,
    tmp_path: Path,
) -> None:
    configured = pull_settings(
        settings, source_config(source_pacs, "c-move"), routing=prior_rule(wait_s=1)
    )
    send_follow_up(listening_gateway, tmp_path / "follow-up")
    complete_all(engine)
    sent = Sent()
    router = StudyRouter(configured, engine, sent)
    router.seed()
    (job_id,) = router.route_complete_studies()
    assert router.dispatch_queued() == 0  # no puller ran: still waiting
    time.sleep(1.2)
    assert router.dispatch_queued() == 1 and sent == [(job_id, "routine")]
    recorded = job_prior(engine)
    assert recorded.state == "timed_out" and recorded.prior_study_instance_uid is None
    assert "no prior within the rule's wait of 1 s" in recorded.reason
    (event,) = audit_rows(engine, "prior.timed_out")
    assert event.outcome == "failure" and event.detail["job"] == job_id
    # A puller that comes late changes nothing: the job went without a prior.
    assert claim_waiting(engine, lease_s=600) is None


def _resolve_follow_up(
    configured: GatewaySettings, engine: Engine, gateway: RunningGateway, folder: Path
) -> tuple[int, str]:
    """The follow-up C-STOREd, routed to a waiting job, and its prior looked for once."""
    send_follow_up(gateway, folder)
    complete_all(engine)
    router = StudyRouter(configured, engine, Sent())
    router.seed()
    (job_id,) = router.route_complete_studies()
    claim = claim_waiting(engine, lease_s=600)
    assert claim is not None and claim.job_id == job_id
    return job_id, PriorResolver(configured, engine).resolve(claim)


def test_no_prior_within_the_years_asked_is_none_with_the_reason(
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    source_studies: dict[str, SourceStudy],
    listening_gateway: RunningGateway,
    tmp_path: Path,
) -> None:
    """Within 1 year of 2026-01-15 the patient has a head CT and a chest MR only: the chest
    CT of 2024-01-10 is too old, so there is no prior and nothing is fetched."""
    configured = pull_settings(
        settings, source_config(source_pacs, "c-get"), routing=prior_rule(within_years=1)
    )
    job_id, state = _resolve_follow_up(configured, engine, listening_gateway, tmp_path / "f")
    assert state == "none"
    recorded = job_prior(engine)
    assert (recorded.state, recorded.prior_study_instance_uid) == ("none", None)
    assert "within 1 years" in recorded.reason and "modality CT" in recorded.reason
    assert pulled_rows(engine) == []
    for key in ("prior", "head", "mr-chest"):
        assert not source_studies[key].sop_instance_uids & stored_instances(engine), key
    (event,) = audit_rows(engine, "prior.none")
    assert event.detail["job"] == job_id


def test_any_body_part_takes_the_latest_study_of_the_same_modality_by_wado_rs(
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    source_studies: dict[str, SourceStudy],
    listening_gateway: RunningGateway,
    tmp_path: Path,
) -> None:
    """A rule that does not ask for the same body part: the latest CT of the patient (the
    2025-09-01 head CT), not the later chest MR; fetched through QIDO-RS and WADO-RS."""
    configured = pull_settings(
        settings,
        source_config(source_pacs, "wado-rs"),
        routing=prior_rule(same_body_part=False),
    )
    _, state = _resolve_follow_up(configured, engine, listening_gateway, tmp_path / "f")
    head = source_studies["head"]
    assert state == "found"
    assert job_prior(engine).prior_study_instance_uid == head.study_instance_uid
    assert head.sop_instance_uids <= stored_instances(engine)
    assert not source_studies["mr-chest"].sop_instance_uids & stored_instances(engine)
    [(study_uid, purpose)] = [(r.study_instance_uid, r.purpose) for r in pulled_rows(engine)]
    assert (study_uid, purpose) == (head.study_instance_uid, "prior")
