"""The prior a rule asks for, in the admin UI: set, changed, cleared and refused in the rule
form (stored in the rule's row, audited with the user), shown in the rules list; and on the
study page, per job, the prior it used (linked when the gateway holds it) or why none."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, insert, select, update

from gateway.audit import utcnow
from gateway.models import AuditEvent, JobPrior, RoutingRule, Study, StudyState
from gateway.settings import GatewaySettings
from tests.web.conftest import csrf
from tests.web.study_data import StoredStudy, store_study

Client = Callable[[str | None], FlaskClient]

RULE = {"priority": "routine", "pipeline": "lung_nodules", "conditions": "modality equals CT"}


def _post(client: FlaskClient, url: str, status: int, **data: object) -> str:
    response = client.post(url, data={**data, "csrf_token": csrf(client)}, follow_redirects=True)
    assert response.status_code == status, (url, response.status_code)
    return response.get_data(as_text=True)


def _stored_prior(engine: Engine, name: str) -> Any:
    with engine.connect() as connection:
        return connection.execute(
            select(RoutingRule.prior).where(RoutingRule.name == name)
        ).scalar_one()


def _audit_details(engine: Engine, kind: str) -> list[tuple[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(AuditEvent.actor, AuditEvent.detail)
            .where(AuditEvent.kind == kind)
            .order_by(AuditEvent.id)
        ).all()
    return [(r.actor, r.detail) for r in rows]


def _field(page: str, name: str) -> str:
    match = re.search(rf'name="{name}"[^>]*value="([^"]*)"', page)
    assert match, f"expected the field {name} in the form"
    return match.group(1)


def test_rule_form_sets_changes_clears_and_refuses_a_prior(
    client_as: Client, engine: Engine
) -> None:
    admin = client_as("admin")
    new_form = admin.get("/rules/new").get_data(as_text=True)
    assert _field(new_form, "prior_within_years") == "" and 'id="prior-same-body-part" checked' in (
        new_form
    )
    page = _post(
        admin,
        "/rules/new",
        200,
        name="chest-ct",
        enabled="on",
        prior_within_years="5",
        prior_same_body_part="on",
        prior_wait_s="600",
        **RULE,
    )
    assert "Rule chest-ct created." in page
    set_prior = {"within_years": 5.0, "same_body_part": True, "wait_s": 600.0}
    assert _stored_prior(engine, "chest-ct") == set_prior
    assert "within 5 y, same body part, wait 600 s" in page  # the rules list
    ((actor, created),) = _audit_details(engine, "rule.created")
    assert actor == "admin" and created["prior"] == set_prior
    with engine.connect() as connection:
        rule_id = connection.execute(
            select(RoutingRule.id).where(RoutingRule.name == "chest-ct")
        ).scalar_one()

    edit = admin.get(f"/rules/{rule_id}/edit").get_data(as_text=True)
    assert (_field(edit, "prior_within_years"), _field(edit, "prior_wait_s")) == ("5", "600")
    assert 'id="prior-same-body-part" checked' in edit
    _post(  # changed: any body part, a shorter wait
        admin,
        f"/rules/{rule_id}/edit",
        200,
        enabled="on",
        prior_within_years="2.5",
        prior_wait_s="30",
        **RULE,
    )
    changed_prior = {"within_years": 2.5, "same_body_part": False, "wait_s": 30.0}
    assert _stored_prior(engine, "chest-ct") == changed_prior
    page = _post(admin, f"/rules/{rule_id}/edit", 200, enabled="on", **RULE)  # cleared
    assert _stored_prior(engine, "chest-ct") is None
    assert re.search(r'<td class="prior">none</td>', page)
    updates = [d["changed"] for a, d in _audit_details(engine, "rule.updated") if a == "admin"]
    assert updates == [
        {"prior": {"from": set_prior, "to": changed_prior}},
        {"prior": {"from": changed_prior, "to": None}},
    ]

    both = "expected within_years and wait_s both given (or both blank for no prior)"
    refused = [
        (
            {"prior_within_years": "five", "prior_wait_s": "60"},
            "prior within_years: expected a number of years, found &#39;five&#39;",
        ),
        (
            {"prior_within_years": "5", "prior_wait_s": "inf"},
            "prior wait_s: expected a number of seconds, found &#39;inf&#39;",
        ),
        (
            {"prior_within_years": "-1", "prior_wait_s": "60"},
            "prior.within_years: Input should be greater than 0 (found -1.0)",
        ),
        (
            {"prior_within_years": "5", "prior_wait_s": "-3"},
            "prior.wait_s: Input should be greater than or equal to 0 (found -3.0)",
        ),
        (
            {"prior_within_years": "5"},
            f"prior: {both}, found within_years &#39;5&#39; and wait_s blank",
        ),
    ]
    for fields, message in refused:
        page = _post(admin, f"/rules/{rule_id}/edit", 400, enabled="on", **RULE, **fields)
        assert f"Not saved: {message}" in page, fields
        assert _field(page, "prior_within_years") == fields["prior_within_years"]  # kept
        assert _stored_prior(engine, "chest-ct") is None
    page = _post(
        admin, "/rules/new", 400, name="other", prior_within_years="x", prior_wait_s="9", **RULE
    )
    assert "Not saved: prior within_years" in page
    with engine.connect() as connection:
        assert connection.execute(select(RoutingRule.name)).scalars().all() == ["chest-ct"]
    assert len(_audit_details(engine, "rule.updated")) == 2  # refusals change nothing


@pytest.fixture
def study(settings: GatewaySettings, engine: Engine, tmp_path: Path) -> StoredStudy:
    return store_study(settings, engine, tmp_path / "study")


def test_study_page_shows_the_prior_each_job_used_or_why_none(
    client_as: Client, engine: Engine, study: StoredStudy
) -> None:
    held_prior, missing_prior = "2.25.4242", "2.25.4343"
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            insert(Study).values(
                study_instance_uid=held_prior,
                state=StudyState.COMPLETE,
                first_received_at=now,
                last_received_at=now,
            )
        )
        common = {
            "study_instance_uid": study.study_uid,
            "deadline_at": now + timedelta(seconds=600),
            "created_at": now,
        }
        connection.execute(
            insert(JobPrior),
            [
                {
                    **common,
                    "job_id": study.job_id,
                    "state": "found",
                    "prior_study_instance_uid": held_prior,
                    "reason": None,
                    "finished_at": now,
                },
                {
                    **common,
                    "job_id": study.failed_job_id,
                    "state": "none",
                    "prior_study_instance_uid": None,
                    "reason": "no prior study (modality CT, body part CHEST) within 5 years",
                    "finished_at": now,
                },
            ],
        )
    viewer = client_as("viewer")
    page = viewer.get(f"/studies/{study.study_uid}").get_data(as_text=True)
    found = re.search(rf'id="prior-{study.job_id}">(.*?)</p>', page, re.S)
    assert found and f'href="/studies/{held_prior}"' in found.group(1)
    none = re.search(rf'id="prior-{study.failed_job_id}">(.*?)</p>', page, re.S)
    assert none and "no prior used (none): no prior study (modality CT, body part CHEST)" in (
        none.group(1)
    )
    assert "href" not in none.group(1)

    with engine.begin() as connection:  # a prior found but no longer held: not linked
        connection.execute(
            update(JobPrior)
            .where(JobPrior.job_id == study.job_id)
            .values(prior_study_instance_uid=missing_prior)
        )
        connection.execute(
            update(JobPrior)
            .where(JobPrior.job_id == study.failed_job_id)
            .values(state="waiting", reason=None, finished_at=None)
        )
    page = viewer.get(f"/studies/{study.study_uid}").get_data(as_text=True)
    found = re.search(rf'id="prior-{study.job_id}">(.*?)</p>', page, re.S)
    assert found and missing_prior in found.group(1) and "href" not in found.group(1)
    assert "not held by the gateway" in found.group(1)
    waiting = re.search(rf'id="prior-{study.failed_job_id}">(.*?)</p>', page, re.S)
    assert waiting and "waiting for it until" in waiting.group(1)
