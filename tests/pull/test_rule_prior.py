"""A rule created in the admin UI (no rule in the settings) asks for a prior: its row holds
the prior, the follow-up's job waits, the prior found on Orthanc is recorded on the job, and
the study page links it."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from gateway.jobs.router import StudyRouter
from gateway.models import JobPrior, RoutingRule
from gateway.pull.priors import PriorResolver, claim_waiting
from gateway.settings import GatewaySettings
from gateway.web import create_app
from gateway.web.users import Role, create_user
from tests.conftest import RunningGateway
from tests.pull.conftest import (
    Sent,
    SourcePacs,
    audit_rows,
    complete_all,
    pull_settings,
    source_config,
)
from tests.pull.studies import SourceStudy
from tests.pull.test_priors import job_prior, prior_rule, send_follow_up
from tests.web.conftest import PASSWORD, csrf, sign_in


def admin_client(configured: GatewaySettings, engine: Engine) -> FlaskClient:
    app = create_app(configured, engine)
    app.config["TESTING"] = True
    create_user(engine, configured.web, "admin", PASSWORD, Role.ADMIN, actor="test")
    admin = app.test_client()
    assert sign_in(admin, "admin") == 302
    return admin


def test_a_rule_made_in_the_ui_waits_for_its_prior_and_records_it(
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    source_studies: dict[str, SourceStudy],
    listening_gateway: RunningGateway,
    tmp_path: Path,
) -> None:
    configured = pull_settings(
        settings,
        source_config(source_pacs, "c-get"),
        routing={"rules": [], "series_selection": {"min_slices": 2}},
    )
    admin = admin_client(configured, engine)
    made = admin.post(
        "/rules/new",
        data={
            "name": "chest-ct-ui",
            "enabled": "on",
            "priority": "routine",
            "pipeline": "lung_nodules",
            "conditions": "modality equals CT",
            "prior_within_years": "5",
            "prior_same_body_part": "on",
            "prior_wait_s": "120",
            "csrf_token": csrf(admin),
        },
    )
    assert made.status_code == 302, made.get_data(as_text=True)
    with engine.connect() as connection:
        assert connection.execute(select(RoutingRule.prior)).scalar_one() == {
            "within_years": 5.0,
            "same_body_part": True,
            "wait_s": 120.0,
        }

    follow_up = send_follow_up(listening_gateway, tmp_path / "follow-up")
    complete_all(engine)
    sent = Sent()
    router = StudyRouter(configured, engine, sent)
    assert router.seed() == 0  # nothing from the settings: the UI's rule alone
    (job_id,) = router.route_complete_studies()
    assert job_prior(engine).state == "waiting"
    assert router.dispatch_queued() == 0 and sent == []  # waits for its prior
    (requested,) = audit_rows(engine, "prior.requested")
    assert requested.detail == {
        "job": job_id,
        "within_years": 5.0,
        "same_body_part": True,
        "wait_s": 120.0,
    }

    claim = claim_waiting(engine, lease_s=600)
    assert claim is not None and claim.rule_name == "chest-ct-ui"
    assert PriorResolver(configured, engine).resolve(claim) == "found"
    prior_uid = source_studies["prior"].study_instance_uid
    assert job_prior(engine).prior_study_instance_uid == prior_uid
    assert router.dispatch_queued() == 1 and sent == [(job_id, "routine")]

    page = admin.get(f"/studies/{follow_up.study_instance_uid}").get_data(as_text=True)
    assert f'id="prior-{job_id}"' in page and f'href="/studies/{prior_uid}"' in page


def test_a_prior_cleared_in_the_ui_is_not_taken_from_the_settings(
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    listening_gateway: RunningGateway,
    tmp_path: Path,
) -> None:
    """The settings' rule of the same name still has its prior: the row decides."""
    configured = pull_settings(settings, source_config(source_pacs, "c-get"), routing=prior_rule())
    sent = Sent()
    router = StudyRouter(configured, engine, sent)
    assert router.seed() == 1
    with engine.connect() as connection:
        rule_id, seeded = connection.execute(select(RoutingRule.id, RoutingRule.prior)).one()
    assert seeded == {"within_years": 5.0, "same_body_part": True, "wait_s": 120.0}
    admin = admin_client(configured, engine)
    cleared = admin.post(
        f"/rules/{rule_id}/edit",
        data={
            "enabled": "on",
            "priority": "routine",
            "pipeline": "lung_nodules",
            "conditions": "modality equals CT",
            "prior_within_years": "",
            "prior_wait_s": "",
            "csrf_token": csrf(admin),
        },
    )
    assert cleared.status_code == 302, cleared.get_data(as_text=True)
    assert router.seed() == 0  # the settings do not put it back

    send_follow_up(listening_gateway, tmp_path / "follow-up")
    complete_all(engine)
    (job_id,) = router.route_complete_studies()
    with engine.connect() as connection:
        assert connection.execute(select(JobPrior)).all() == []
    assert audit_rows(engine, "prior.requested") == []
    assert router.dispatch_queued() == 1 and sent == [(job_id, "routine")]  # no wait
