"""Retention on SQLite and the real PostgreSQL, with real spool files: it removes the files
of studies past the period whose jobs all ended and whose results were all delivered, and
nothing else; rows and audit stay, one audit event per study (counts, no PHI); the dry run
changes nothing; a late instance keeps its file; a crash between decision and removal is
finished by the next pass; `pacs-gateway retention` and the service's periodic pass run it."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select, update

from gateway.audit import utcnow
from gateway.models import (
    AuditEvent,
    DeliveryState,
    Job,
    JobPrior,
    JobState,
    Study,
    StudyState,
)
from gateway.retention.purge import RECENT, RetentionPass
from gateway.settings import GatewaySettings
from tests.conftest import REPO, RunningGateway, make_settings, settings_environment
from tests.dicom_samples import SECRET_PATIENT_ID, SECRET_PATIENT_NAME
from tests.operations.scene import Scene, StoredStudy
from tests.pipeline.harness import wait_until
from tests.routing.studies import SeriesSpec, send_study

DAYS = 30
LATER = dt.timedelta(days=DAYS + 10)  # "now" for the pass: every study is old by then


def purge_events(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [
            {"study": uid, "actor": actor, **(detail or {})}
            for uid, actor, detail in connection.execute(
                select(AuditEvent.study_instance_uid, AuditEvent.actor, AuditEvent.detail)
                .where(AuditEvent.kind == "study.purged")
                .order_by(AuditEvent.id)
            ).all()
        ]


def add_prior(scene: Scene, job_id: int, prior: StoredStudy, follow_up: StoredStudy) -> None:
    with scene.engine.begin() as connection:
        connection.execute(
            JobPrior.__table__.insert().values(
                job_id=job_id,
                study_instance_uid=follow_up.uid,
                state="found",
                prior_study_instance_uid=prior.uid,
                deadline_at=utcnow(),
                created_at=utcnow(),
                finished_at=utcnow(),
            )
        )


def give_results(scene: Scene, study: StoredStudy) -> list[Path]:
    """Result and findings files for each job of `study`, named in its summary as the
    runner names them; returns their paths."""
    settings = scene.settings
    made: list[Path] = []
    with scene.engine.begin() as connection:
        for job_id in connection.execute(
            select(Job.id).where(Job.study_instance_uid == study.uid)
        ).scalars():
            relative = f"{study.uid}/{study.series_uid}.{job_id}/{job_id}.dcm"
            findings = settings.jobs_dir / str(job_id) / "findings.npz"
            for path in (settings.results_dir / relative, findings):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"derived from the patient's images")
                made.append(path)
            connection.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(summary={"results": [{"relative_path": relative}]})
            )
    return made


class Population:
    """One study per case the rule decides; `purge` and `keep` by expected outcome."""

    def __init__(self, scene: Scene, now: dt.datetime) -> None:
        cutoff = now - dt.timedelta(days=DAYS)
        s = scene
        self.delivered = s.study(3)
        s.job(self.delivered, JobState.DELIVERED, finished_at=utcnow())
        s.delivery(self.delivered, DeliveryState.DELIVERED, "seg")
        s.delivery(self.delivered, DeliveryState.DELIVERED, "sr")
        self.no_rule = s.study(2)  # routed, no rule matched: no job, nothing to deliver
        self.failed_long_ago = s.study(2)  # dead letter, never retried within the period
        s.job(self.failed_long_ago, JobState.FAILED, finished_at=cutoff - dt.timedelta(days=1))
        s.job(
            self.failed_long_ago,
            JobState.CANCELLED,
            finished_at=cutoff - dt.timedelta(days=2),
            pipeline="other",
        )
        self.shadow = s.study(2)  # primary delivered, shadow stored (never delivered)
        s.job(self.shadow, JobState.DELIVERED, finished_at=utcnow())
        s.job(self.shadow, JobState.STORED, finished_at=utcnow(), pipeline="shadow")
        s.delivery(self.shadow, DeliveryState.DELIVERED)

        self.running = s.study(2)
        running_job = s.job(self.running, JobState.RUNNING)
        self.queued = s.study(1)
        s.job(self.queued, JobState.QUEUED)
        self.failed_recently = s.study(2)  # an operator may still retry it
        s.job(self.failed_recently, JobState.FAILED, finished_at=cutoff + dt.timedelta(days=1))
        self.undelivered = s.study(2)
        s.job(self.undelivered, JobState.DELIVERED, finished_at=utcnow())
        s.delivery(self.undelivered, DeliveryState.DELIVERED, "seg")
        s.delivery(self.undelivered, DeliveryState.FAILED, "sr")
        self.pending_delivery = s.study(1)
        s.job(self.pending_delivery, JobState.DELIVERED, finished_at=utcnow())
        s.delivery(self.pending_delivery, DeliveryState.PENDING)
        self.not_routed = s.study(2, routed=False)
        self.prior = s.study(2)  # the prior of the running job
        add_prior(s, running_job, self.prior, self.running)
        self.recent = s.study(2)
        s.set_last_received(self.recent.uid, now - dt.timedelta(days=DAYS - 1))

        self.purge = [self.delivered, self.no_rule, self.failed_long_ago, self.shadow]
        self.keep = {
            RECENT: [self.recent],
            "job_unfinished": [self.running, self.queued],
            "job_ended_recently": [self.failed_recently],
            "delivery_not_delivered": [self.undelivered, self.pending_delivery],
            "not_settled": [self.not_routed],
            "prior_of_unfinished_job": [self.prior],
        }

    def kept(self) -> list[StoredStudy]:
        return [study for studies in self.keep.values() for study in studies]


def test_purges_only_studies_whose_jobs_ended_and_results_were_delivered(
    settings: GatewaySettings, engine: Engine
) -> None:
    scene = Scene(settings, engine)
    now = utcnow() + LATER
    population = Population(scene, now)
    spool = settings.spool_dir
    retention = RetentionPass(settings, engine, days=DAYS, actor="test")
    # what the jobs derived: results (SEG, SR) and saved findings carry PHI too
    derived_purged = [
        p for s in (population.delivered, population.shadow) for p in give_results(scene, s)
    ]
    derived_kept = give_results(scene, population.failed_recently)

    plan = retention.plan(now)  # the dry run: lists, explains, changes nothing
    assert {c.study_instance_uid for c in plan.to_purge} == {s.uid for s in population.purge}
    assert sum(c.instances for c in plan.to_purge) == 3 + 2 + 2 + 2
    assert {r: n for r, n in plan.kept.items() if n} == {
        r: len(s) for r, s in population.keep.items()
    }
    assert all(s.intact(spool) for s in population.purge + population.kept())
    assert purge_events(engine) == []

    report = retention.run(now)
    assert sorted(report.purged) == sorted(s.uid for s in population.purge)
    assert (report.files_removed, report.files_missing, report.errors) == (9, 0, 0)
    assert report.derived_removed == len(derived_purged) == 6  # 3 jobs: a result, findings
    assert not any(p.exists() for p in derived_purged), "results of a purged study remain"
    assert all(p.exists() for p in derived_kept), "a kept study lost its results"
    assert report.bytes_removed == sum(
        len(b) for s in population.purge for b in s.contents.values()
    )
    for study in population.purge:
        assert study.files_present(spool) == 0, "expected the purged study's files gone"
        row = scene.study_row(study.uid)
        assert row.spool_purged_at is not None and not row.spool_purge_pending
        assert scene.instance_rows(study.uid) == len(study.contents), "rows must stay"
    for study in population.kept():
        assert study.intact(spool), "a kept study lost a file or its bytes changed"
        assert scene.study_row(study.uid).spool_purged_at is None

    events = purge_events(engine)
    assert sorted(e["study"] for e in events) == sorted(s.uid for s in population.purge)
    delivered = next(e for e in events if e["study"] == population.delivered.uid)
    assert delivered["instances"] == 3 and delivered["jobs"] == 1
    assert delivered["deliveries"] == 2 and delivered["retention_days"] == DAYS
    assert delivered["bytes"] == sum(len(b) for b in population.delivered.contents.values())
    text = json.dumps(events)
    assert SECRET_PATIENT_NAME not in text and SECRET_PATIENT_ID not in text

    again = retention.run(now)  # nothing left to do, nothing audited twice
    assert again.purged == [] and again.plan.already_purged == len(population.purge)
    assert len(purge_events(engine)) == len(population.purge)


def test_an_instance_after_the_decision_keeps_its_file_and_reopens_the_study(
    settings: GatewaySettings, engine: Engine
) -> None:
    scene = Scene(settings, engine)
    study = scene.study(3)
    retention = RetentionPass(settings, engine, days=DAYS)
    now = utcnow() + LATER

    through_id = retention.decide(scene.study_row(study.uid).id, now - dt.timedelta(days=DAYS), now)
    assert through_id is not None
    # Between the decision's commit and the removal, the modality sends one more image.
    late = scene.store_instances(study.uid, study.series_uid, 1, start=10)[0]
    report = retention.run(now)  # finishes the pending removal

    assert study.files_present(settings.spool_dir) == 0
    assert (settings.spool_dir / late).is_file(), "the late instance's file was removed"
    row = scene.study_row(study.uid)
    assert row.state == StudyState.UPDATED and not row.spool_purge_pending
    assert report.files_removed == 3 and report.purged == []  # the study is reopened
    # Once complete and routed again, it qualifies again, for its new instance only.
    scene.complete()
    scene.mark_routed(study.uid)
    plan = retention.plan(now)
    assert [(c.study_instance_uid, c.instances) for c in plan.to_purge] == [(study.uid, 1)]
    retention.run(now)
    assert not (settings.spool_dir / late).is_file()
    assert [e["again"] for e in purge_events(engine)] == [False, True]


def test_an_instance_before_the_decision_cancels_it(
    settings: GatewaySettings, engine: Engine
) -> None:
    scene = Scene(settings, engine)
    study = scene.study(2)
    retention = RetentionPass(settings, engine, days=DAYS)
    now = utcnow() + LATER
    plan = retention.plan(now)
    assert [c.study_instance_uid for c in plan.to_purge] == [study.uid]

    # After the plan, before the decision: a late instance reopens the study.
    late = scene.store_instances(study.uid, study.series_uid, 1, start=10)[0]
    assert retention.decide(plan.to_purge[0].study_id, plan.cutoff, now) is None

    assert study.intact(settings.spool_dir) and (settings.spool_dir / late).is_file()
    assert scene.study_row(study.uid).spool_purged_at is None
    assert purge_events(engine) == []


def test_a_crash_between_decision_and_removal_is_finished_by_the_next_pass(
    settings: GatewaySettings, engine: Engine
) -> None:
    scene = Scene(settings, engine)
    study = scene.study(3)
    kept = scene.study(2)
    scene.job(kept, JobState.RUNNING)
    now = utcnow() + LATER
    first = RetentionPass(settings, engine, days=DAYS)
    assert first.decide(scene.study_row(study.uid).id, now - dt.timedelta(days=DAYS), now)
    # ... the process dies here: decided and audited, the files still there.
    assert study.intact(settings.spool_dir) and scene.study_row(study.uid).spool_purge_pending

    plan = RetentionPass(settings, engine, days=DAYS).plan(now)
    assert plan.pending == 1 and plan.to_purge == []
    report = RetentionPass(settings, engine, days=DAYS).run(now)  # the next start
    assert report.files_removed == 3 and report.purged == []
    assert study.files_present(settings.spool_dir) == 0
    assert not scene.study_row(study.uid).spool_purge_pending
    assert kept.intact(settings.spool_dir)
    assert [e["study"] for e in purge_events(engine)] == [study.uid]  # one event, not two


def _cli(settings: GatewaySettings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "retention", *args],
        cwd=REPO,
        env=settings_environment(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_dry_run_lists_then_the_real_run_purges(
    settings: GatewaySettings, engine: Engine
) -> None:
    scene = Scene(settings, engine)
    done = scene.study(2)
    busy = scene.study(2)
    scene.job(busy, JobState.QUEUED)

    refused = _cli(settings, "--dry-run")  # retention_days unset: off
    assert refused.returncode == 2 and "found neither (retention is off)" in refused.stderr

    dry = _cli(settings, "--days", "0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would purge {done.uid}" in dry.stdout and busy.uid not in dry.stdout
    assert "would purge 1 studies, 2 files" in dry.stdout
    assert "kept 1 studies: job_unfinished 1" in dry.stdout
    assert done.intact(settings.spool_dir) and purge_events(engine) == []

    real = _cli(settings, "--days", "0")
    assert real.returncode == 0, real.stderr
    assert "removed 2 files" in real.stdout
    assert done.files_present(settings.spool_dir) == 0 and busy.intact(settings.spool_dir)
    assert [e["actor"].startswith("cli:") for e in purge_events(engine)] == [True]


def test_the_service_purges_on_its_periodic_pass_and_the_study_page_says_so(
    tmp_path: Path, database_url: str, engine: Engine, start_gateway: Any
) -> None:
    from gateway.web import create_app
    from gateway.web.users import Role, create_user
    from tests.web.conftest import sign_in

    settings = make_settings(
        tmp_path / "data",
        database_url,
        storage={"retention_days": 0, "orphan_sweep_interval_s": 0.3},
        web={"session_cookie_secure": False},
    )
    gateway: RunningGateway = start_gateway(settings)
    sent = send_study(gateway, tmp_path / "study", [SeriesSpec(1, 3)])  # no rule routes it
    spool = settings.spool_dir
    wait_until(
        lambda: scene_files(spool, sent.study_uid) == 0 and _purged(engine, sent.study_uid),
        30,
        "the study's spool files purged by the periodic pass",
    )
    gateway.stop()
    assert [e["actor"] for e in purge_events(engine)] == ["retention"]

    create_user(engine, settings.web, "viewer", "correct horse battery", Role.VIEWER, actor="t")
    client = create_app(settings, engine).test_client()
    assert sign_in(client, "viewer", "correct horse battery") == 302
    page = client.get(f"/studies/{sent.study_uid}").get_data(as_text=True)
    assert 'id="spool-purged"' in page and "Purged by retention" in page


def scene_files(spool: Path, study_uid: str) -> int:
    return sum(1 for p in (spool / study_uid).rglob("*.dcm")) if (spool / study_uid).is_dir() else 0


def _purged(engine: Engine, study_uid: str) -> bool:
    with engine.connect() as connection:
        row = connection.execute(
            select(Study.spool_purged_at, Study.spool_purge_pending).where(
                Study.study_instance_uid == study_uid
            )
        ).one_or_none()
    return row is not None and row[0] is not None and not row[1]
