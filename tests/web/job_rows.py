"""Study, job and delivery rows with chosen times, written as the listener, router, worker
and deliverer write them (same columns, same states), for tests of what is computed from
those times: charts, percentiles and histograms."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from sqlalchemy import Engine, insert

from gateway.models import Delivery, DeliveryState, Job, JobState, Study, StudyState

_UIDS = itertools.count(1)


def add_study(engine: Engine, last_received_at: datetime, instances: int = 10) -> tuple[int, str]:
    uid = f"1.2.826.0.1.3680043.10.1234.{next(_UIDS)}"
    with engine.begin() as connection:
        study_id = connection.execute(
            insert(Study)
            .values(
                study_instance_uid=uid,
                state=StudyState.COMPLETE,
                instance_count=instances,
                first_received_at=last_received_at - timedelta(seconds=5),
                last_received_at=last_received_at,
                completed_at=last_received_at + timedelta(seconds=1),
                completion_count=1,
                routed_generation=1,
            )
            .returning(Study.id)
        ).scalar_one()
    return int(study_id), uid


def add_job(
    engine: Engine,
    study: tuple[int, str],
    *,
    pipeline: str = "lung_nodules",
    created_at: datetime,
    started_at: datetime | None = None,
    finished_at: datetime | None = None,
    state: JobState = JobState.DELIVERED,
) -> int:
    study_id, uid = study
    with engine.begin() as connection:
        job_id = connection.execute(
            insert(Job)
            .values(
                study_id=study_id,
                study_instance_uid=uid,
                generation=1,
                rule_name="chest-ct",
                pipeline=pipeline,
                model_key=f"{pipeline}-model:1",
                series_instance_uid=uid + ".1",
                destinations=["pacs"],
                priority="routine",
                state=state,
                attempts=1 if started_at else 0,
                created_at=created_at,
                enqueued_at=created_at,
                started_at=started_at,
                delivered_at=finished_at if state == JobState.DELIVERED else None,
                finished_at=finished_at,
                updated_at=finished_at or started_at or created_at,
            )
            .returning(Job.id)
        ).scalar_one()
    return int(job_id)


def add_delivery(
    engine: Engine,
    study_uid: str,
    destination: str,
    created_at: datetime,
    delivered_at: datetime | None,
    last_error: str | None = None,
) -> None:
    n = next(_UIDS)
    with engine.begin() as connection:
        connection.execute(
            insert(Delivery).values(
                destination=destination,
                study_instance_uid=study_uid,
                series_instance_uid=study_uid + ".9",
                sop_instance_uid=f"{study_uid}.9.{n}",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                kind="seg",
                file_path=f"x/{n}.dcm",
                state=DeliveryState.DELIVERED if delivered_at else DeliveryState.PENDING,
                attempts=1,
                last_error=last_error,
                next_attempt_at=created_at,
                created_at=created_at,
                updated_at=delivered_at or created_at,
                delivered_at=delivered_at,
            )
        )
