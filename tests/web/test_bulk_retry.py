"""Bulk retry (Flask client, SQLite and PostgreSQL): the FAILED jobs of a rule and/or of
studies received in a time range; a confirmation step that counts them and changes nothing;
then exactly the confirmed jobs that are still failed are queued again through the
single-job retry, one `job.requeued` audit event each; operators only, CSRF as every form,
clear messages for bad criteria."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, insert, select, update

from gateway.audit import utcnow
from gateway.jobs.control import retry_job
from gateway.models import AuditEvent, Delivery, DeliveryState, Job, JobState, Study
from gateway.settings import GatewaySettings
from tests.web.conftest import csrf
from tests.web.search_data import add_job, ct_files, ingest

Client = Callable[[str | None], FlaskClient]
NIGHT = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)
FAILED_SOP = "2.25.424242"


@dataclass(frozen=True)
class Failures:
    uids: dict[str, str]
    jobs: dict[str, int]


def _received(engine: Engine, uid: str, when: dt.datetime) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(Study).where(Study.study_instance_uid == uid).values(last_received_at=when)
        )


@pytest.fixture
def failures(settings: GatewaySettings, engine: Engine, tmp_path: Path) -> Failures:
    """Four studies received in one night (02:30, 03:30, 04:00, 05:00), jobs of two rules
    in several states; one failed job has a failed delivery."""
    uids = {
        key: ingest(settings, engine, ct_files(tmp_path / key, seed), "CT_SCANNER")
        for key, seed in (("s0230", 31), ("s0330", 32), ("s0400", 33), ("s0500", 34))
    }
    for key, hhmm in (("s0230", (2, 30)), ("s0330", (3, 30)), ("s0400", (4, 0)), ("s0500", (5, 0))):
        _received(engine, uids[key], NIGHT.replace(hour=hhmm[0], minute=hhmm[1]))
    failed = JobState.FAILED
    jobs = {
        "ct-0230": add_job(
            engine,
            uids["s0230"],
            state=failed,
            summary={"results": [{"sop_instance_uid": FAILED_SOP}]},
        ),
        "ct-0330": add_job(engine, uids["s0330"], state=failed),
        "ct-0500": add_job(engine, uids["s0500"], state=failed),
        "xr-0330": add_job(
            engine, uids["s0330"], rule="chest-xr", pipeline="chest_xray_nodule", state=failed
        ),
        "xr-0400": add_job(
            engine, uids["s0400"], rule="chest-xr", pipeline="chest_xray_nodule", state=failed
        ),
        "ct-delivered": add_job(engine, uids["s0400"], model_key="m:2"),
        "ct-cancelled": add_job(engine, uids["s0500"], state=JobState.CANCELLED, model_key="m:2"),
    }
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            insert(Delivery).values(
                destination="pacs",
                study_instance_uid=uids["s0230"],
                series_instance_uid="2.25.4242",
                sop_instance_uid=FAILED_SOP,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
                kind="sr",
                file_path="x/sr.dcm",
                state=DeliveryState.FAILED,
                attempts=5,
                last_error="association rejected",
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    return Failures(uids, jobs)


def _states(engine: Engine) -> dict[int, JobState]:
    with engine.connect() as connection:
        return dict(connection.execute(select(Job.id, Job.state)).tuples().all())


def _requeued(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(AuditEvent.__table__)
                .where(AuditEvent.kind == "job.requeued")
                .order_by(AuditEvent.id)
            ).all()
        )


def _preview(client: FlaskClient, query: str, status: int = 200) -> tuple[str, list[int]]:
    response = client.get(f"/jobs/bulk-retry?{query}")
    assert response.status_code == status, response.get_data(as_text=True)[:400]
    page = html.unescape(response.get_data(as_text=True))
    hidden = re.search(r'name="job_ids" value="([0-9 ]*)"', page)
    return page, [] if hidden is None else [int(i) for i in hidden.group(1).split()]


def _confirm(client: FlaskClient, job_ids: list[int], **criteria: str) -> str:
    response = client.post(
        "/jobs/bulk-retry",
        data={**criteria, "job_ids": " ".join(map(str, job_ids)), "csrf_token": csrf(client)},
        follow_redirects=True,
    )
    assert response.status_code == 200
    return html.unescape(response.get_data(as_text=True))


def test_a_rules_failed_jobs_are_counted_confirmed_and_each_retried_and_audited(
    client_as: Client, failures: Failures, engine: Engine
) -> None:
    client = client_as("operator")
    jobs = failures.jobs
    before = _states(engine)
    page, confirmed = _preview(client, "rule=chest-ct")
    assert 'id="bulk-count">3 failed job(s) match' in page
    assert "Retry these 3 failed job(s)" in page
    assert confirmed == sorted([jobs["ct-0230"], jobs["ct-0330"], jobs["ct-0500"]])
    # Counting changes nothing.
    assert _states(engine) == before and _requeued(engine) == []

    page = _confirm(client, confirmed, rule="chest-ct")
    assert "Retried 3 failed job(s)." in page
    assert 'id="bulk-count">0 failed job(s) match' in page  # back on the form, none left
    after = _states(engine)
    for name in ("ct-0230", "ct-0330", "ct-0500"):
        assert after[jobs[name]] == JobState.QUEUED, name
    for name in ("xr-0330", "xr-0400"):  # another rule
        assert after[jobs[name]] == JobState.FAILED, name
    assert after[jobs["ct-delivered"]] == JobState.DELIVERED
    assert after[jobs["ct-cancelled"]] == JobState.CANCELLED  # failed only, not cancelled
    with engine.connect() as connection:
        unsent = connection.execute(
            select(Job.enqueued_at, Job.last_error).where(Job.id.in_(confirmed))
        ).all()
        delivery = connection.execute(
            select(Delivery.state, Delivery.attempts).where(Delivery.sop_instance_uid == FAILED_SOP)
        ).one()
    assert all(r.enqueued_at is None and r.last_error is None for r in unsent)  # the router sends
    assert delivery == (DeliveryState.PENDING, 0)  # as the single-job retry does

    events = _requeued(engine)
    assert sorted(e.detail["job"] for e in events) == confirmed  # one event per job
    for event in events:
        assert event.actor == "operator"
        assert event.detail["was"] == "failed"
        assert event.detail["bulk"] == {"rule": "chest-ct"}
        assert event.study_instance_uid in failures.uids.values()


def test_a_received_time_range_alone_and_with_a_rule(
    client_as: Client, failures: Failures, engine: Engine
) -> None:
    client = client_as("admin")
    jobs = failures.jobs
    window = {"received_from": "2024-05-01T02:00", "received_to": "2024-05-01T04:00"}
    query = "&".join(f"{k}={v}" for k, v in window.items())
    page, confirmed = _preview(client, query)
    # 02:30 and 03:30, both rules; 04:00 is the end, not included; 05:00 is after.
    assert confirmed == sorted([jobs["ct-0230"], jobs["ct-0330"], jobs["xr-0330"]])
    page, with_rule = _preview(client, f"{query}&rule=chest-xr")
    assert with_rule == [jobs["xr-0330"]]

    page = _confirm(client, with_rule, rule="chest-xr", **window)
    assert "Retried 1 failed job(s)." in page
    states = _states(engine)
    assert states[jobs["xr-0330"]] == JobState.QUEUED
    assert states[jobs["xr-0400"]] == JobState.FAILED  # outside the range
    assert states[jobs["ct-0330"]] == JobState.FAILED  # another rule
    [event] = _requeued(engine)
    assert event.detail["bulk"] == {"rule": "chest-xr", **window}
    assert event.actor == "admin"


def test_only_confirmed_jobs_that_still_match_and_still_failed_are_retried(
    client_as: Client, failures: Failures, engine: Engine
) -> None:
    client = client_as("operator")
    jobs = failures.jobs
    _, confirmed = _preview(client, "rule=chest-ct")
    # Between the two steps: one confirmed job is retried by hand, a new job fails.
    retry_job(engine, jobs["ct-0330"], "someone-else")
    late_failure = add_job(engine, failures.uids["s0400"], state=JobState.FAILED, model_key="m:3")
    # A forged ID of another rule's failed job rides along.
    page = _confirm(client, [*confirmed, jobs["xr-0400"]], rule="chest-ct")
    assert "Retried 2 failed job(s)." in page
    assert "2 confirmed job(s) no longer failed or no longer matching: not retried." in page
    states = _states(engine)
    assert states[late_failure] == JobState.FAILED  # not in the count confirmed
    assert states[jobs["xr-0400"]] == JobState.FAILED
    events = _requeued(engine)
    by_job: dict[int, list[str]] = {}
    for event in events:
        by_job.setdefault(event.detail["job"], []).append(event.actor)
    assert by_job == {
        jobs["ct-0230"]: ["operator"],
        jobs["ct-0330"]: ["someone-else"],  # once, by hand; the bulk retry left it alone
        jobs["ct-0500"]: ["operator"],
    }


def test_operators_only_and_csrf(client_as: Client, failures: Failures, engine: Engine) -> None:
    viewer = client_as("viewer")
    assert viewer.get("/jobs/bulk-retry?rule=chest-ct").status_code == 403
    ids = " ".join(str(i) for i in failures.jobs.values())
    response = viewer.post(
        "/jobs/bulk-retry", data={"rule": "chest-ct", "job_ids": ids, "csrf_token": csrf(viewer)}
    )
    assert response.status_code == 403
    operator = client_as("operator")
    assert (
        operator.post("/jobs/bulk-retry", data={"rule": "chest-ct", "job_ids": ids}).status_code
        == 400
    )
    assert client_as(None).get("/jobs/bulk-retry").status_code == 302
    assert _requeued(engine) == []
    # The studies page links operators (not viewers) to it, with the rule searched for.
    assert 'id="bulk-retry-link"' not in viewer.get("/studies").get_data(as_text=True)
    page = operator.get("/studies?rule=chest-ct").get_data(as_text=True)
    assert 'href="/jobs/bulk-retry?rule=chest-ct" id="bulk-retry-link"' in page


def test_bad_or_missing_criteria_get_a_clear_message(
    client_as: Client, failures: Failures, engine: Engine
) -> None:
    client = client_as("operator")
    page, ids = _preview(client, "received_from=last+night", 400)
    assert (
        "Received from: expected a date and time as YYYY-MM-DDTHH:MM (UTC), found 'last night'"
        in page
    )
    assert ids == []
    page, _ = _preview(client, "received_from=2024-05-01T04:00&received_to=2024-05-01T02:00", 400)
    assert "Received: expected the start before the end" in page
    page, ids = _preview(client, "")
    assert "Choose a rule, a time range of when the studies were received, or both." in page
    assert ids == []
    response = client.post(
        "/jobs/bulk-retry",
        data={"job_ids": str(failures.jobs["ct-0230"]), "csrf_token": csrf(client)},
    )
    assert response.status_code == 400
    assert "expected a rule or a received time range, found neither" in response.get_data(
        as_text=True
    )
    assert _requeued(engine) == []
