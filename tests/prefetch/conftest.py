"""A gateway (listener, assembly, router in a thread) whose one routing rule names the lung
nodule pipeline but matches nothing: the prefetcher works for the rule's pipeline, and the
tests make and run the jobs themselves (onnxruntime runner, no Triton)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import Engine, func, insert, select

from gateway.audit import utcnow
from gateway.models import Instance, Job, JobState, Study
from gateway.phantom import make_phantom, write_ct_series
from gateway.settings import GatewaySettings
from tests.conftest import make_settings
from tests.scu import send_files
from workers.prefetch.prefetcher import Prefetcher


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> GatewaySettings:
    return make_settings(
        tmp_path / "data",
        database_url,
        inference={"runner": "onnxruntime"},
        routing={
            "rules": [
                {
                    "name": "prefetch-only",
                    "conditions": [{"attribute": "modality", "value": "NONE"}],
                    "pipeline": "lung_nodules",
                }
            ]
        },
    )


@dataclass(frozen=True)
class SentSeries:
    paths: list[Path]
    study_instance_uid: str
    series_instance_uid: str


def send_ct(port: int, directory: Path, seed: int = 21, slices: int = 24) -> SentSeries:
    """A small chest CT phantom with nodules, sent by a pynetdicom SCU."""
    phantom = make_phantom(
        seed,
        shape=(slices, 256, 256),
        spacing=(2.5, 1.4, 1.4),
        n_nodules=2,
        nodule_diameter_mm=(12.0, 20.0),
    )
    paths = write_ct_series(phantom, directory)
    assert send_files(port, paths) == [0] * len(paths)
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    return SentSeries(paths, str(first.StudyInstanceUID), str(first.SeriesInstanceUID))


def make_job(engine: Engine, sent: SentSeries, generation: int) -> int:
    now = utcnow()
    with engine.begin() as connection:
        study_id = connection.execute(
            select(Study.id).where(Study.study_instance_uid == sent.study_instance_uid)
        ).scalar_one()
        return int(
            connection.execute(
                insert(Job)
                .values(
                    study_id=study_id,
                    study_instance_uid=sent.study_instance_uid,
                    generation=generation,
                    rule_name="prefetch-only",
                    pipeline="lung_nodules",
                    model_key="m",
                    series_instance_uid=sent.series_instance_uid,
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


def drain(prefetcher: Prefetcher, engine: Engine, timeout_s: float = 30.0) -> None:
    """Poll until the prefetcher has looked at every instance stored so far (it waits out a
    burst it sees arriving, so one empty poll does not mean done)."""
    with engine.connect() as connection:
        newest = int(connection.execute(select(func.max(Instance.id))).scalar() or 0)
    deadline = time.monotonic() + timeout_s
    while prefetcher.last_id < newest:
        assert time.monotonic() < deadline, f"expected the prefetcher at {newest} in time"
        if not prefetcher.poll_once():
            time.sleep(0.05)
