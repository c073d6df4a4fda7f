"""Runs from the CLI, the UI and the JSON API. The CLI carries a run out itself, printing
each batch; the UI and the API queue it and the gateway's puller (`serve`) carries it out,
progress per batch on the run's page and in JSON. Operators only; CSRF as everywhere."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from gateway.models import PullRun
from gateway.settings import GatewaySettings
from gateway.web import create_app
from gateway.web.users import Role, create_user
from tests.conftest import REPO, RunningGateway, settings_environment
from tests.pull.conftest import (
    SourcePacs,
    pull_settings,
    pulled_rows,
    source_config,
    stored_instances,
)
from tests.pull.studies import SourceStudy
from tests.web.conftest import PASSWORD, csrf, sign_in

RULES = {
    "rules": [{"name": "chest-ct", "conditions": [{"attribute": "modality", "value": "CT"}]}],
    "series_selection": {"min_slices": 2},
}


def cli(configured: GatewaySettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "pull", *args],
        env=settings_environment(configured),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_dry_run_then_run_by_accession_number(
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    source_studies: dict[str, SourceStudy],
) -> None:
    configured = pull_settings(settings, source_config(source_pacs, "c-get"), routing=RULES)
    a = source_studies["a"]
    before = source_pacs.retrievals()

    dry = cli(configured, "--accession", "PULLACC-A", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{a.study_instance_uid}  20250310  CT" in dry.stdout
    assert "-> rule chest-ct" in dry.stdout and "1 studies would be fetched" in dry.stdout
    assert source_pacs.retrievals() == before and stored_instances(engine) == set()

    done = cli(configured, "--accession", "PULLACC-A")
    assert done.returncode == 0, done.stderr
    assert f"batch 1: {a.study_instance_uid} pulled: 3 instances" in done.stdout
    assert "batch 1 done: 1 pulled, 0 failed" in done.stdout
    assert stored_instances(engine) == a.sop_instance_uids
    assert [(r.state, r.run_id) for r in pulled_rows(engine)] == [("pulled", 1)]
    assert "PULLACC-A" not in done.stdout + done.stderr  # the number is not echoed
    with engine.connect() as connection:  # once resolved, only the count is kept
        assert connection.execute(select(PullRun.criteria)).scalar_one() == {"accession_numbers": 1}

    refused = cli(configured, "--accession", "X", "--from", "20250101")
    assert refused.returncode == 2
    assert "expected exactly one of accession numbers" in refused.stderr


def wait_run_done(client: FlaskClient, run_id: int, timeout_s: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        data: dict[str, Any] = client.get(f"/api/pull/runs/{run_id}").get_json()
        if data["state"] in ("done", "failed") or time.monotonic() > deadline:
            return data
        time.sleep(0.2)


def test_the_ui_and_the_api_queue_runs_that_the_gateway_carries_out(
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    source_studies: dict[str, SourceStudy],
    start_gateway: Callable[[GatewaySettings], RunningGateway],
) -> None:
    configured = pull_settings(settings, source_config(source_pacs, "wado-rs"), routing=RULES)
    start_gateway(configured)  # its puller carries out what is queued
    app = create_app(configured, engine)
    app.config["TESTING"] = True
    for role in ("viewer", "operator"):
        create_user(engine, configured.web, role, PASSWORD, Role(role), actor="test")
    operator, viewer = app.test_client(), app.test_client()
    assert sign_in(operator, "operator") == 302 and sign_in(viewer, "viewer") == 302
    headers = {"X-CSRF-Token": csrf(operator)}
    b, c = source_studies["b"], source_studies["c"]
    query = {"date_from": "20250601", "date_to": "20250603", "modality": "CT"}

    # API: a dry run, then a run in batches of one study.
    reply = operator.post("/api/pull/dry-run", json=query, headers=headers)
    assert reply.status_code == 200, reply.get_data(as_text=True)
    listed = {s["study_instance_uid"]: s["rule"] for s in reply.get_json()["studies"]}
    assert listed == {b.study_instance_uid: "chest-ct", c.study_instance_uid: "chest-ct"}
    assert stored_instances(engine) == set()
    reply = operator.post("/api/pull/runs", json={**query, "batch_size": 1}, headers=headers)
    assert reply.status_code == 202, reply.get_data(as_text=True)
    run = wait_run_done(operator, reply.get_json()["id"])
    assert (run["state"], run["studies"], run["pulled"], run["failed"]) == ("done", 2, 2, 0), run
    assert [(x["batch"], x["pulled"], x["pending"]) for x in run["batches"]] == [
        (1, 1, 0),
        (2, 1, 0),
    ]
    assert stored_instances(engine) == b.sop_instance_uids | c.sop_instance_uids

    # Refusals: bad criteria, no CSRF token, a viewer.
    bad = operator.post("/api/pull/runs", json={"modality": "CT"}, headers=headers)
    assert bad.status_code == 400 and "only a modality" in bad.get_json()["error"]
    assert operator.post("/api/pull/runs", json=query).status_code == 400
    assert (
        viewer.post(
            "/api/pull/runs", json=query, headers={"X-CSRF-Token": csrf(viewer)}
        ).status_code
        == 403
    )
    assert viewer.get("/pull").status_code == 403

    # UI: a dry run lists the study, a run queued from the form is carried out.
    form = {"accession_numbers": "PULLACC-A", "csrf_token": csrf(operator)}
    page = operator.post("/pull/dry-run", data=form)
    assert page.status_code == 200
    assert source_studies["a"].study_instance_uid in page.get_data(as_text=True)
    started = operator.post("/pull/runs", data=form)
    assert started.status_code == 302
    run_id = int(started.location.rsplit("/", 1)[1])
    assert wait_run_done(operator, run_id)["pulled"] == 1
    html = operator.get(f"/pull/runs/{run_id}").get_data(as_text=True)
    assert "1 studies: 1 pulled, 0 failed" in html and 'id="batches"' in html
    index = operator.get("/pull").get_data(as_text=True)
    assert "1 accession number(s)" in index
