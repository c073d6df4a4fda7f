"""A rule with a shadow pipeline: the router makes a second job (no destinations, marked with
its primary job), the worker builds and stores its results and queues none of them, and the
two runs are compared. The real listener, router and job runner with the real models
(onnxruntime in process); the shadow is the lung nodule pipeline file run by the generic
analyser under another name and version, a candidate as a hospital would register one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, update

from gateway.assembly import StudyAssembler
from gateway.audit import utcnow
from gateway.jobs.router import StudyRouter
from gateway.models import AuditEvent, Delivery, Job, JobState, RoutingRule, ShadowComparison
from gateway.monitoring.outcome import study_outcome
from gateway.monitoring.source import VersionKey
from gateway.monitoring.statistics import Statistic
from gateway.monitoring.watch import watch_all
from gateway.phantom import make_phantom, write_ct_series
from gateway.pipelines.lung_nodules import DESCRIPTION_FILE
from gateway.settings import GatewaySettings, SettingsError
from tests.conftest import RunningGateway, make_settings
from tests.monitoring.job_rows import MODEL_KEY
from tests.scu import send_files
from workers.jobs.runner import JobRunner

CANDIDATE = "lung_nodules_candidate"


def candidate_pipelines(folder: Path) -> Path:
    """The lung nodule pipeline file as a candidate: another name, version 2."""
    folder.mkdir(parents=True, exist_ok=True)
    text = DESCRIPTION_FILE.read_text()
    text = text.replace('name = "lung_nodules"', f'name = "{CANDIDATE}"', 1)
    text = text.replace('version = "1"\ntitle', 'version = "2"\ntitle', 1)
    (folder / f"{CANDIDATE}.toml").write_text(text)
    return folder


def shadow_settings(base: GatewaySettings, tmp_path: Path, **rule: object) -> GatewaySettings:
    return make_settings(
        base.data_dir,
        base.sqlalchemy_url,
        assembly={"quiet_period_s": 3600},
        queue={"router_poll_interval_s": 3600, "broker_url": "redis://127.0.0.1:6379/15"},
        pipelines={"dirs": [str(candidate_pipelines(tmp_path / "pipelines"))]},
        routing={
            "rules": [
                {
                    "name": "chest-ct",
                    "conditions": [{"attribute": "modality", "value": "CT"}],
                    "pipeline": "lung_nodules",
                    **rule,
                }
            ],
            "series_selection": {"min_slices": 4},
        },
        destinations=[
            {"kind": "dicom", "name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 1}
        ],
        delivery={"connect_timeout_s": 1, "max_attempts": 100},
        inference={"runner": "onnxruntime"},
    )


def send_phantom(gateway: RunningGateway, folder: Path, seed: int = 7) -> None:
    phantom = make_phantom(
        seed,
        shape=(16, 160, 160),
        spacing=(3.0, 2.2, 2.2),
        n_nodules=1,
        nodule_diameter_mm=(14, 18),
    )
    paths = write_ct_series(phantom, folder)
    assert send_files(gateway.port, paths) == [0] * len(paths)


def route(settings: GatewaySettings, engine: Engine) -> list[int]:
    StudyAssembler(engine, 0.001).complete_quiet_studies(now=utcnow() + timedelta(seconds=5))
    router = StudyRouter(settings, engine, lambda job_id, priority: None)
    router.seed()
    return router.route_complete_studies()


def job(engine: Engine, job_id: int) -> object:
    with engine.connect() as connection:
        return connection.execute(select(Job).where(Job.id == job_id)).one()


def kinds(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(select(AuditEvent.kind).order_by(AuditEvent.id)).scalars())


def test_shadow_results_are_stored_compared_and_never_queued(
    settings: GatewaySettings,
    engine: Engine,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
    tmp_path: Path,
) -> None:
    configured = shadow_settings(settings, tmp_path, shadow_pipeline=CANDIDATE)
    send_phantom(start_gateway(configured), tmp_path / "ct")
    primary_id, shadow_id = route(configured, engine)
    primary, shadow = job(engine, primary_id), job(engine, shadow_id)
    assert (primary.pipeline, primary.pipeline_version, primary.shadow_of) == (
        "lung_nodules",
        "1",
        None,
    )
    assert (shadow.pipeline, shadow.pipeline_version, shadow.shadow_of) == (
        CANDIDATE,
        "2",
        primary_id,
    )
    assert primary.destinations == ["pacs"] and shadow.destinations == []
    assert shadow.series_instance_uid == primary.series_instance_uid
    assert kinds(engine).count("shadow.job_queued") == 1

    # Whatever its row says (an edit, a bug in the router), the worker queues none of a
    # shadow job's results.
    with engine.begin() as connection:
        connection.execute(update(Job).where(Job.id == shadow_id).values(destinations=["pacs"]))
    runner = JobRunner(configured, engine)
    try:
        runner.run(primary_id)  # its delivery waits for the PACS (nothing listens on port 1)
        shadow_outcome = runner.run(shadow_id)
    finally:
        runner.close()
    assert shadow_outcome.state == JobState.STORED
    shadow = job(engine, shadow_id)
    assert shadow.state == JobState.STORED and shadow.finished_at is not None
    assert shadow.delivered_at is None
    results = shadow.summary["results"]
    assert sorted(r["kind"] for r in results) == ["seg", "sr"]
    for result in results:
        assert (configured.results_dir / result["relative_path"]).is_file()

    with engine.connect() as connection:
        queued = connection.execute(select(Delivery.sop_instance_uid)).scalars().all()
        comparison = connection.execute(select(ShadowComparison)).one()
    primary_uids = {r["sop_instance_uid"] for r in job(engine, primary_id).summary["results"]}
    shadow_uids = {r["sop_instance_uid"] for r in results}
    assert set(queued) == primary_uids  # the primary's SEG and SR, for the one destination
    assert not shadow_uids & set(queued), "a shadow result was queued for delivery"
    assert "shadow.job_stored" in kinds(engine)

    # The same models on the same series: the two runs agree.
    assert (comparison.primary_job_id, comparison.shadow_job_id) == (primary_id, shadow_id)
    assert comparison.findings_agree is True
    assert comparison.score_difference == pytest.approx(0.0, abs=0.02)
    assert comparison.mean_dice is not None and comparison.mean_dice > 0.9, comparison.segments
    names = {m["name"] for m in comparison.segments}
    assert names == {"lung", "nodule"}, comparison.segments
    assert kinds(engine).count("shadow.compared") == 1

    # The model watch reads these real job rows: one study per pipeline version, keyed by
    # its models' versions (as tests/monitoring/job_rows.py writes them), its score the
    # analyser's probability, its findings the nodules, its latency the stage seconds.
    with engine.connect() as connection:
        watches = {
            w.key: w
            for w in watch_all(
                connection, configured.monitoring, utcnow(), configured.pipeline_registry()
            )
        }
    assert set(watches) == {
        VersionKey("lung_nodules", "1", MODEL_KEY),
        VersionKey(CANDIDATE, "2", MODEL_KEY),
    }, set(watches)
    registry = configured.pipeline_registry()
    for job_id, key in ((primary_id, "lung_nodules"), (shadow_id, CANDIDATE)):
        ran = job(engine, job_id)
        outcome = study_outcome(ran.summary, registry.get(key).description)
        assert outcome is not None and outcome.score is not None, ran.summary
        (watch,) = [w for k, w in watches.items() if k.pipeline == key]
        (day,) = watch.days
        values = day.statistics.values
        assert day.statistics.studies == 1 and not watch.learned
        assert values[Statistic.SCORE_MEAN] == pytest.approx(outcome.score)
        assert values[Statistic.POSITIVE_RATE] == float(bool(outcome.positive))
        assert values[Statistic.FINDINGS_MEAN] == outcome.findings
        assert values[Statistic.FAILURE_RATE] == 0.0
        stages = ran.stage_seconds
        latency = sum(stages[s] for s in ("load_preprocess", "inference", "postprocess"))
        assert values[Statistic.LATENCY_MEAN] == pytest.approx(latency) and latency > 0


def test_a_shadow_the_registry_lacks_is_skipped_audited(
    settings: GatewaySettings,
    engine: Engine,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
    tmp_path: Path,
) -> None:
    configured = shadow_settings(settings, tmp_path)
    send_phantom(start_gateway(configured), tmp_path / "ct")
    StudyRouter(configured, engine, lambda job_id, priority: None).seed()
    with engine.begin() as connection:  # edited in the database, or its file removed since
        connection.execute(update(RoutingRule).values(shadow_pipeline="retired_model"))
    (primary_id,) = route(configured, engine)
    assert job(engine, primary_id).state == JobState.QUEUED
    with engine.connect() as connection:
        (detail,) = connection.execute(
            select(AuditEvent.detail).where(AuditEvent.kind == "shadow.not_run")
        ).scalars()
    assert "retired_model" in detail["reason"] and detail["job"] == primary_id


def test_settings_refuse_a_shadow_not_registered_or_the_rules_own(
    settings: GatewaySettings, tmp_path: Path
) -> None:
    with pytest.raises(SettingsError, match=r"shadow_pipeline: expected a registered.*no_such"):
        shadow_settings(settings, tmp_path, shadow_pipeline="no_such_pipeline")
    with pytest.raises(SettingsError, match=r"other than 'lung_nodules'.*found 'lung_nodules'"):
        shadow_settings(settings, tmp_path, shadow_pipeline="lung_nodules")
