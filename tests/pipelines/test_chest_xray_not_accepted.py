"""Series the chest_xray_nodule boundary refuses or passes over, on SQLite and PostgreSQL: a
DX routed to the CT pipeline and a CT routed to the radiograph pipeline each end failed at
once with a reason code, no model called, never retried; a lateral view is refused; among a
study's radiographs the frontal PA view is the one picked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import Engine, select

from gateway.jobs.router import StudyRouter
from gateway.models import Job, JobState
from gateway.phantom import make_phantom, write_ct_series
from gateway.phantom.radiograph import make_radiograph
from gateway.phantom.radiograph_dicom import write_radiograph
from gateway.pipelines.chest_xray_nodule import pipeline as chest_xray_pipeline
from gateway.routing.config import RuleSettings
from gateway.routing.rules import route_study
from gateway.routing.selection import select_series
from gateway.settings import GatewaySettings
from tests.conftest import RunningGateway, make_settings
from tests.jobs.test_router_and_control import Sent, audit, complete_all
from tests.pipelines.test_not_accepted import _job, _no_analyser
from tests.scu import send_files
from workers.jobs.runner import JobRunner

STUDY_UID = "1.2.826.0.1.3680043.8.498.1210001"


def _radiograph(path: Path, seed: int, view: str, series_number: int = 1) -> Path:
    rad = make_radiograph(seed, view_position="PA", n_nodules=0, long_side_px=256, noise=False)
    written = write_radiograph(rad, path, study_instance_uid=STUDY_UID)
    ds = pydicom.dcmread(written)
    ds.ViewPosition = view
    ds.SeriesNumber = series_number
    ds.save_as(written, enforce_file_format=True)
    return written


def _ct(path: Path) -> list[Path]:
    phantom = make_phantom(3, shape=(8, 32, 32), spacing=(2.5, 8.0, 8.0), n_nodules=0)
    return write_ct_series(phantom, path)


@pytest.mark.parametrize(
    ("study", "pipeline", "reason"),
    [
        ("dx", "lung_nodules", "not_accepted.modality"),
        ("ct", "chest_xray_nodule", "not_accepted.modality"),
        ("lateral", "chest_xray_nodule", "not_accepted.view_position"),
    ],
)
def test_job_fails_once_with_a_reason_code(
    gateway: RunningGateway,
    engine: Engine,
    tmp_path: Path,
    study: str,
    pipeline: str,
    reason: str,
) -> None:
    if study == "ct":
        paths = _ct(tmp_path / "ct")
    else:
        paths = [_radiograph(tmp_path / "dx.dcm", 15200, "LL" if study == "lateral" else "PA")]
    assert send_files(gateway.port, paths) == [0] * len(paths)
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    job_id = _job(engine, str(first.StudyInstanceUID), str(first.SeriesInstanceUID), pipeline)
    runner = JobRunner(gateway.settings, engine, analyser_factory=_no_analyser)  # type: ignore[arg-type]
    outcome = runner.run(job_id)
    assert outcome.state == JobState.FAILED and outcome.retry_in_s is None
    with engine.connect() as connection:
        job = connection.execute(select(Job).where(Job.id == job_id)).one()
    assert job.state == JobState.FAILED and job.attempts == 1
    assert reason in (job.last_error or ""), job.last_error
    assert runner.run(job_id).message == "already finished"


def test_the_frontal_pa_view_is_picked_and_a_lateral_passed_over(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    # series numbers put the lateral and the AP first, so the view decides, not the number
    paths = [
        _radiograph(tmp_path / "ll.dcm", 15201, "LL", series_number=1),
        _radiograph(tmp_path / "ap.dcm", 15202, "AP", series_number=2),
        _radiograph(tmp_path / "pa.dcm", 15203, "PA", series_number=3),
    ]
    assert send_files(gateway.port, paths) == [0, 0, 0]
    series = [str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in paths]
    criteria = chest_xray_pipeline().description.accepts.series_selection()
    with engine.connect() as connection:
        decision = route_study(connection, STUDY_UID, [RuleSettings(name="dx")])
        choice = select_series(
            connection, gateway.settings.spool_dir, decision.series_instance_uids, criteria
        )
        # without a PA, the AP
        without_pa = select_series(connection, gateway.settings.spool_dir, series[:2], criteria)
    assert choice.series_instance_uid == series[2], choice
    assert choice.rejected == ("series 1: view position 'LL', not in ['PA', 'AP']",)
    assert without_pa.series_instance_uid == series[1], without_pa


def test_the_router_passes_over_a_series_of_the_wrong_kind_with_the_reason(
    settings: GatewaySettings,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
    engine: Engine,
    tmp_path: Path,
) -> None:
    """A rule sending DX to the CT pipeline, one sending CT to the radiograph pipeline: a
    job failed at once with the reason code, never sent; a frontal DX to its pipeline: one
    queued job."""
    rules = [
        {
            "name": "dx-to-ct",
            "conditions": [{"attribute": "modality", "value": "DX"}, _study("wrong")],
            "pipeline": "lung_nodules",
        },
        {
            "name": "ct-to-dx",
            "conditions": [{"attribute": "modality", "value": "CT"}],
            "pipeline": "chest_xray_nodule",
        },
        {
            "name": "dx",
            "conditions": [{"attribute": "modality", "value": "DX"}],
            "pipeline": "chest_xray_nodule",
        },
    ]
    configured = make_settings(
        settings.data_dir,
        settings.sqlalchemy_url,
        assembly={"quiet_period_s": 3600},
        queue={"router_poll_interval_s": 3600, "broker_url": "redis://127.0.0.1:6379/15"},
        routing={"rules": rules},
    )
    gateway = start_gateway(configured)
    wrong = _radiograph(tmp_path / "wrong.dcm", 15204, "PA")
    ds = pydicom.dcmread(wrong)
    ds.StudyDescription = "wrong"
    ds.StudyInstanceUID = f"{STUDY_UID}.1"
    ds.save_as(wrong, enforce_file_format=True)
    right = _radiograph(tmp_path / "right.dcm", 15205, "AP")
    ct = _ct(tmp_path / "ct")
    assert send_files(gateway.port, [wrong, right, *ct]) == [0] * (2 + len(ct))
    router = StudyRouter(configured, engine, Sent())
    router.seed()
    complete_all(engine)
    sent = router.send
    made = router.route_complete_studies()
    assert len(made) == 3
    with engine.connect() as connection:
        jobs = {j.study_instance_uid: j for j in connection.execute(select(Job)).all()}
    wrong_job = jobs[f"{STUDY_UID}.1"]
    assert wrong_job.state == JobState.FAILED and wrong_job.pipeline == "lung_nodules"
    assert wrong_job.last_error.startswith("not_accepted.modality: rule 'dx-to-ct'")
    assert "modality 'DX', not in ['CT']" in wrong_job.last_error
    ct_uid = str(pydicom.dcmread(ct[0], stop_before_pixels=True).StudyInstanceUID)
    ct_job = jobs[ct_uid]
    assert ct_job.state == JobState.FAILED and ct_job.pipeline == "chest_xray_nodule"
    assert "modality 'CT', not in ['DX', 'CR']" in ct_job.last_error
    assert ct_job.last_error.startswith("not_accepted.modality")
    (failed,) = audit(engine, ct_uid, "job.failed")
    assert str(failed["reason"]).startswith("not_accepted.modality")
    job = jobs[STUDY_UID]
    assert job.state == JobState.QUEUED and job.pipeline == "chest_xray_nodule"
    assert job.series_instance_uid == str(pydicom.dcmread(right).SeriesInstanceUID)
    router.dispatch_queued()  # only the queued job goes to the broker, never a failed one
    assert [job_id for job_id, _priority in sent] == [job.id]


def _study(description: str) -> dict[str, str]:
    return {"attribute": "study_description", "value": description}
