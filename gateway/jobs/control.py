"""Operator actions on jobs: retry a failed or cancelled job, cancel an unfinished one.
Each is an audit event with the user who asked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from gateway.audit import AuditKind, audit_row, record, utcnow
from gateway.database import writer_queue
from gateway.models import (
    TERMINAL_JOB_STATES,
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Series,
    Study,
)


class JobActionRefused(Exception):
    """The job is not in a state that allows the action."""


class ImagesPurged(JobActionRefused):
    """A retry that would need the study's images, which retention removed from the spool."""


@dataclass(frozen=True)
class JobSummary:
    id: int
    study_instance_uid: str
    rule_name: str
    state: JobState
    attempts: int
    last_error: str | None


def list_jobs(engine: Engine, limit: int = 50) -> list[JobSummary]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                Job.id,
                Job.study_instance_uid,
                Job.rule_name,
                Job.state,
                Job.attempts,
                Job.last_error,
            )
            .order_by(Job.id.desc())
            .limit(limit)
        ).all()
    return [JobSummary(*row) for row in rows]


def retry_job(
    engine: Engine, job_id: int, user: str, *, bulk: dict[str, str] | None = None
) -> None:
    """Queue a failed or cancelled job again; its failed deliveries become pending. Stages
    already done are skipped by the task. `bulk`: the criteria of the bulk retry that asked
    for it, kept in its audit event."""
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        job = connection.execute(
            select(
                Job.state,
                Job.study_instance_uid,
                Job.summary,
                Job.study_id,
                Job.series_instance_uid,
                Job.results_built_at,
            ).where(Job.id == job_id)
        ).one_or_none()
        if job is None:
            raise JobActionRefused(f"expected job {job_id} to exist, found none")
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            raise JobActionRefused(
                f"expected job {job_id} failed or cancelled to retry it, found {job.state.value}"
            )
        built = job.results_built_at is not None and "results" in (job.summary or {})
        purged_at = None if built else _images_purged_at(connection, job)
        if purged_at is not None:
            raise ImagesPurged(
                f"job {job_id}: expected the study's images in the spool, found them purged "
                f"by retention on {purged_at:%Y-%m-%d %H:%M} UTC"
            )
        connection.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(
                state=JobState.QUEUED,
                enqueued_at=None,
                finished_at=None,
                last_error=None,
                updated_at=now,
            )
        )
        uids = [r["sop_instance_uid"] for r in (job.summary or {}).get("results", [])]
        if uids:
            connection.execute(
                update(Delivery)
                .where(Delivery.sop_instance_uid.in_(uids), Delivery.state == DeliveryState.FAILED)
                .values(
                    state=DeliveryState.PENDING, attempts=0, next_attempt_at=now, updated_at=now
                )
            )
        record(
            connection,
            audit_row(
                AuditKind.JOB_REQUEUED,
                actor=user,
                study_instance_uid=job.study_instance_uid,
                detail={"job": job_id, "was": job.state.value, **({"bulk": bulk} if bulk else {})},
                occurred_at=now,
            ),
        )


def _images_purged_at(connection: Connection, job: Any) -> datetime | None:
    """When retention purged the spool files of the job's series (instances up to the
    study's `spool_purge_through_id` lost theirs), or None while they are all there. A job
    whose results were built needs no images: its retry only delivers them again."""
    row = connection.execute(
        select(Study.spool_purged_at, Study.spool_purge_through_id).where(Study.id == job.study_id)
    ).one_or_none()
    if row is None or row.spool_purged_at is None or row.spool_purge_through_id is None:
        return None
    lost = connection.execute(
        select(Instance.id)
        .join(Series, Instance.series_id == Series.id)
        .where(
            Series.study_id == job.study_id,
            Series.series_instance_uid == job.series_instance_uid,
            Instance.id <= row.spool_purge_through_id,
        )
        .limit(1)
    ).first()
    return row.spool_purged_at if lost is not None else None


def cancel_job(engine: Engine, job_id: int, user: str) -> None:
    """Stop an unfinished job: a running task stops before its next stage."""
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        job = connection.execute(
            select(Job.state, Job.study_instance_uid).where(Job.id == job_id)
        ).one_or_none()
        if job is None:
            raise JobActionRefused(f"expected job {job_id} to exist, found none")
        if job.state in TERMINAL_JOB_STATES:
            raise JobActionRefused(
                f"expected an unfinished job {job_id} to cancel, found {job.state.value}"
            )
        connection.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(state=JobState.CANCELLED, finished_at=now, updated_at=now)
        )
        record(
            connection,
            audit_row(
                AuditKind.JOB_CANCELLED,
                actor=user,
                study_instance_uid=job.study_instance_uid,
                detail={"job": job_id, "was": job.state.value},
                occurred_at=now,
            ),
        )
