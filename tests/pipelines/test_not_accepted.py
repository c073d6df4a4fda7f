"""A series its pipeline cannot take (a DX sent to a CT pipeline, a single CT slice) or a job
naming no registered pipeline: the job fails at once with a reason code, no model is called,
and nothing retries it."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from sqlalchemy import Engine, insert, select

from gateway.audit import utcnow
from gateway.models import Job, JobState, Study
from gateway.phantom import make_phantom, write_ct_series
from tests.conftest import RunningGateway
from tests.scu import send_files
from workers.jobs.runner import JobRunner


def _no_analyser(*_: object) -> object:
    pytest.fail("expected no model call for a series the pipeline does not accept")


def _job(engine: Engine, study_uid: str, series_uid: str, pipeline: str) -> int:
    now = utcnow()
    with engine.begin() as connection:
        study_id = connection.execute(
            select(Study.id).where(Study.study_instance_uid == study_uid)
        ).scalar_one()
        return int(
            connection.execute(
                insert(Job)
                .values(
                    study_id=study_id,
                    study_instance_uid=study_uid,
                    generation=1,
                    rule_name="r",
                    pipeline=pipeline,
                    model_key="m",
                    series_instance_uid=series_uid,
                    destinations=[],
                    priority="routine",
                    state=JobState.QUEUED,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
                .returning(Job.id)
            ).scalar_one()
        )


@pytest.mark.parametrize(
    ("modality", "slices", "pipeline", "reason"),
    [
        ("DX", 8, "lung_nodules", "not_accepted.modality"),
        ("CT", 1, "lung_nodules", "not_accepted.slice_count"),
        ("CT", 8, "no_such_pipeline", "unknown_pipeline"),
    ],
)
def test_job_fails_once_with_a_reason_code(
    gateway: RunningGateway,
    engine: Engine,
    tmp_path: Path,
    modality: str,
    slices: int,
    pipeline: str,
    reason: str,
) -> None:
    phantom = make_phantom(3, shape=(slices, 32, 32), spacing=(2.5, 8.0, 8.0), n_nodules=0)
    paths = write_ct_series(phantom, tmp_path / "study")
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.Modality = modality
        ds.save_as(path)
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
