"""The shadow job the router makes beside a rule's job: the rule's `shadow_pipeline` on the
same series, routine priority, no destinations, `shadow_of` naming the primary job. The
worker builds and stores its results and never queues them (workers/jobs/runner.py)."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Connection

from gateway.audit import AuditKind, Outcome, audit_row, record
from gateway.database import insert_ignoring_duplicates
from gateway.models import Job, JobState
from gateway.pipelines.registry import PipelineRegistry
from gateway.routing.config import Priority, RuleSettings

LOGGER = logging.getLogger(__name__)


def queue_shadow_job(
    connection: Connection,
    registry: PipelineRegistry,
    rule: RuleSettings,
    primary_job_id: int,
    study_id: int,
    study_uid: str,
    generation: int,
    series_uid: str,
    now: datetime,
) -> int | None:
    """Make the shadow job of the rule's primary job (in the caller's transaction); its id,
    or None when the rule has no shadow, its shadow is not registered or is the rule's own
    pipeline (both audited), or the job exists already."""
    name = rule.shadow_pipeline
    if name is None:
        return None
    reason = None
    if name == rule.pipeline:  # the rule editor set the pipeline to its shadow's
        reason = f"expected a shadow pipeline other than the rule's own, found {name!r}"
    elif name not in registry:  # a rule edited in the database, a pipeline file removed
        reason = f"expected a registered shadow pipeline {registry.names}, found {name!r}"
    if reason is not None:
        record(
            connection,
            audit_row(
                AuditKind.SHADOW_NOT_RUN,
                Outcome.FAILURE,
                actor="router",
                study_instance_uid=study_uid,
                detail={"rule": rule.name, "job": primary_job_id, "reason": reason},
                occurred_at=now,
            ),
        )
        LOGGER.warning("rule %s: shadow not run: %s", rule.name, reason)
        return None
    description = registry.get(name).description
    job_id = connection.execute(
        insert_ignoring_duplicates(
            connection, Job, ["study_instance_uid", "pipeline", "model_key", "generation"]
        )
        .values(
            study_id=study_id,
            study_instance_uid=study_uid,
            generation=generation,
            rule_name=rule.name,
            pipeline=name,
            pipeline_version=description.version,
            model_key=description.model_key,
            series_instance_uid=series_uid,
            destinations=[],  # never delivered; the worker also refuses to queue them
            priority=Priority.ROUTINE.value,
            state=JobState.QUEUED,
            attempts=0,
            shadow_of=primary_job_id,
            created_at=now,
            updated_at=now,
        )
        .returning(Job.id)
    ).scalar()
    if job_id is None:
        return None
    record(
        connection,
        audit_row(
            AuditKind.SHADOW_JOB_QUEUED,
            actor="router",
            study_instance_uid=study_uid,
            detail={
                "job": int(job_id),
                "shadow_of": primary_job_id,
                "rule": rule.name,
                "pipeline": name,
                "version": description.version,
                "generation": generation,
            },
            occurred_at=now,
        ),
    )
    return int(job_id)
