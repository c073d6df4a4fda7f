"""Job rows as the router and workers leave them, for a pipeline version over days: a study
row each, the findings summary of the lung nodule analyser (probability, nodule count) and
the stage seconds; or failed after it started."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Engine, insert

from gateway.models import Job, JobState, Study, StudyState

_UIDS = itertools.count(1)
MODEL_KEY = "lung_nodule_unet:1+nodule_cnn:1"


def add_jobs(
    engine: Engine,
    day: datetime,
    scores: Sequence[float],
    *,
    pipeline: str = "lung_nodules",
    version: str | None = "1",
    model_key: str = MODEL_KEY,
    failed: int = 0,
    latency_s: float = 4.0,
    shadow_of: int | None = None,
) -> list[int]:
    """One job per score made on `day` (spread over its hours), then `failed` failed ones."""
    ids = []
    with engine.begin() as connection:
        for k, score in enumerate([*scores, *([None] * failed)]):
            uid = f"1.2.826.0.1.3680043.10.1234.{next(_UIDS)}"
            at = day + timedelta(minutes=7 * k)
            study_id = connection.execute(
                insert(Study)
                .values(
                    study_instance_uid=uid,
                    state=StudyState.COMPLETE,
                    first_received_at=at,
                    last_received_at=at,
                    completed_at=at,
                    completion_count=1,
                    routed_generation=1,
                )
                .returning(Study.id)
            ).scalar_one()
            done = score is not None
            summary = (
                {
                    "nodule_count": int(score * 4),
                    "nodules": [],
                    "nodule_probability": round(score, 4),
                    "lung_volume_mm3": 5.0e6,
                    "runner": "test",
                }
                if done
                else None
            )
            ids.append(
                connection.execute(
                    insert(Job)
                    .values(
                        study_id=study_id,
                        study_instance_uid=uid,
                        generation=1,
                        rule_name="chest-ct",
                        pipeline=pipeline,
                        pipeline_version=version,
                        model_key=model_key,
                        series_instance_uid=uid + ".1",
                        destinations=[],
                        priority="routine",
                        state=JobState.DELIVERED if done else JobState.FAILED,
                        attempts=1,
                        last_error=None if done else "PermanentInferenceError: test",
                        summary=summary,
                        stage_seconds={
                            "load_preprocess": 1.0,
                            "inference": latency_s - 1.5,
                            "postprocess": 0.5,
                        }
                        if done
                        else None,
                        created_at=at,
                        started_at=at,
                        inferred_at=at if done else None,
                        finished_at=at,
                        updated_at=at,
                        shadow_of=shadow_of,
                    )
                    .returning(Job.id)
                ).scalar_one()
            )
    return ids
