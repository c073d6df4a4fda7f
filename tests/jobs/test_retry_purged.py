"""A retry of a job whose study's images retention purged from the spool is refused, with the
purge date, by every way in (`pacs-gateway retry-job`, the study page's retry, the bulk
retry), instead of queuing a job that fails later; the job stays failed, nothing is
audited as requeued. A job whose results were built (its retry only delivers) and a job of a
study still in the spool are retried as before. Real store path, real retention pass,
SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import html
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, update

from gateway.audit import utcnow
from gateway.jobs.control import ImagesPurged, retry_job
from gateway.models import AuditEvent, Job, JobState, Study
from gateway.retention.purge import RetentionPass
from gateway.settings import GatewaySettings
from tests.conftest import REPO, settings_environment
from tests.operations.scene import Scene
from tests.web.conftest import (  # noqa: F401  (fixtures: the web app on this test's database)
    app,
    client_as,
    csrf,
    engine,
    settings,
    users,
)

EXPECTED = "expected the study's images in the spool, found them purged by retention on "


@dataclass(frozen=True)
class Jobs:
    purged: int  # failed before inference; its study's files are gone
    built: int  # failed in delivery, results built; same purged study
    kept: int  # failed; its study is recent and keeps its files
    purged_on: str  # the purge date as the message writes it


@pytest.fixture
def jobs(settings: GatewaySettings, engine: Engine) -> Jobs:  # noqa: F811
    scene = Scene(settings, engine)
    old, recent = scene.study(3), scene.study(2)
    purged = scene.job(old, JobState.FAILED, finished_at=utcnow())
    built = scene.job(old, JobState.FAILED, finished_at=utcnow(), pipeline="other")
    kept = scene.job(recent, JobState.FAILED, finished_at=utcnow())
    with engine.begin() as connection:
        connection.execute(
            update(Job)
            .where(Job.id == built)
            .values(results_built_at=utcnow(), summary={"results": []})
        )
    later = utcnow() + dt.timedelta(days=40)
    scene.set_last_received(recent.uid, later)
    report = RetentionPass(settings, engine, days=30, actor="test").run(later)
    assert report.purged == [old.uid] and report.files_removed == 3
    assert not old.intact(settings.spool_dir) and recent.intact(settings.spool_dir)
    with engine.connect() as connection:
        when = connection.execute(
            select(Study.spool_purged_at).where(Study.study_instance_uid == old.uid)
        ).scalar_one()
    return Jobs(purged, built, kept, f"{when:%Y-%m-%d %H:%M} UTC")


def state(engine: Engine, job_id: int) -> JobState:  # noqa: F811
    with engine.connect() as connection:
        return JobState(connection.execute(select(Job.state).where(Job.id == job_id)).scalar_one())


def requeued(engine: Engine) -> list[int]:  # noqa: F811
    with engine.connect() as connection:
        details = connection.execute(
            select(AuditEvent.detail).where(AuditEvent.kind == "job.requeued")
        ).scalars()
        return sorted(int(d["job"]) for d in details if d)


def test_retry_refuses_a_job_whose_images_were_purged_and_names_the_date(
    settings: GatewaySettings,  # noqa: F811
    engine: Engine,  # noqa: F811
    jobs: Jobs,
) -> None:
    with pytest.raises(ImagesPurged) as refused:
        retry_job(engine, jobs.purged, "alice")
    assert str(refused.value) == f"job {jobs.purged}: {EXPECTED}{jobs.purged_on}"
    assert state(engine, jobs.purged) == JobState.FAILED
    assert requeued(engine) == []

    cli = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "retry-job", str(jobs.purged), "--user", "bob"],
        cwd=REPO,
        env=settings_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 1, cli.stdout + cli.stderr
    assert f"{EXPECTED}{jobs.purged_on}" in cli.stderr
    assert state(engine, jobs.purged) == JobState.FAILED

    # Needing no images, these two are retried as before.
    retry_job(engine, jobs.built, "alice")
    retry_job(engine, jobs.kept, "alice")
    assert state(engine, jobs.built) == state(engine, jobs.kept) == JobState.QUEUED
    assert requeued(engine) == sorted([jobs.built, jobs.kept])


def test_the_web_retry_and_the_bulk_retry_refuse_it_with_the_reason(
    client_as: Callable[[str | None], FlaskClient],  # noqa: F811
    engine: Engine,  # noqa: F811
    jobs: Jobs,
) -> None:
    client = client_as("operator")
    response = client.post(
        f"/jobs/{jobs.purged}/retry", data={"csrf_token": csrf(client)}, follow_redirects=True
    )
    assert response.status_code == 200
    assert f"{EXPECTED}{jobs.purged_on}" in html.unescape(response.get_data(as_text=True))
    assert state(engine, jobs.purged) == JobState.FAILED

    response = client.post(
        "/jobs/bulk-retry",
        data={
            "rule": "chest-ct",
            "job_ids": f"{jobs.purged} {jobs.kept}",
            "csrf_token": csrf(client),
        },
        follow_redirects=True,
    )
    page = html.unescape(response.get_data(as_text=True))
    assert "Retried 1 failed job(s)." in page
    assert f"Not retried: job {jobs.purged}: {EXPECTED}{jobs.purged_on}" in page
    assert state(engine, jobs.purged) == JobState.FAILED
    assert state(engine, jobs.kept) == JobState.QUEUED
    assert requeued(engine) == [jobs.kept]
