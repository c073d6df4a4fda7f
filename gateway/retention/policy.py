"""Which studies retention may purge, as SQL conditions, so that the pass that decides
(a conditional UPDATE) and the dry run that explains (a SELECT) apply the same rules.

A study is purged only when all of these hold:
- it was last received before the cutoff (now minus `retention_days`);
- it was completed and its latest generation routed, and no series hold is open;
- every job ended: delivered, or stored (a shadow job); a failed or cancelled job counts as
  ended only once it ended before the cutoff, since an operator may retry it until then;
- every delivery of its results is delivered (a pending or failed one keeps it);
- it is no prior of a job that has not ended, and no pull of it is pending;
- it holds instances whose files were not purged yet (never purged, or new since).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ColumnElement, and_, exists, func, not_, or_, select

from gateway.models import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobPrior,
    JobState,
    PulledStudy,
    Series,
    Study,
    StudyState,
)

SUCCEEDED_JOB_STATES = (JobState.DELIVERED, JobState.STORED)
RETRIABLE_END_STATES = (JobState.FAILED, JobState.CANCELLED)  # retry_job takes these
UNFINISHED_JOB_STATES = tuple(
    s for s in JobState if s not in SUCCEEDED_JOB_STATES + RETRIABLE_END_STATES
)


class KeepReason(enum.StrEnum):
    """Why an old study keeps its files; a study is counted under the first that holds."""

    NOT_SETTLED = "not_settled"  # not completed, latest generation not routed, or held
    JOB_UNFINISHED = "job_unfinished"  # queued, running, inferred or results built
    JOB_ENDED_RECENTLY = "job_ended_recently"  # failed or cancelled within the period
    DELIVERY_NOT_DELIVERED = "delivery_not_delivered"  # pending, or failed for good
    PRIOR_OF_UNFINISHED_JOB = "prior_of_unfinished_job"
    PULL_PENDING = "pull_pending"


def has_unpurged_instances() -> ColumnElement[bool]:
    """Never purged, or an instance arrived since the last purge (it reopened the study)."""
    newer = exists().where(
        Series.study_id == Study.id,
        Instance.series_id == Series.id,
        Instance.id > Study.spool_purge_through_id,
    )
    return or_(Study.spool_purge_through_id.is_(None), newer)


def old_enough(cutoff: datetime) -> ColumnElement[bool]:
    return Study.last_received_at < cutoff


def keep_conditions(cutoff: datetime) -> list[tuple[KeepReason, ColumnElement[bool]]]:
    """Each reason with the condition (correlated to `Study`) under which it holds."""
    job_of_study = Job.study_id == Study.id
    unfinished_prior_user = (
        select(JobPrior.id)
        .join(Job, Job.id == JobPrior.job_id)
        .where(
            JobPrior.prior_study_instance_uid == Study.study_instance_uid,
            Job.state.in_(UNFINISHED_JOB_STATES),
        )
        .exists()
    )
    return [
        (
            KeepReason.NOT_SETTLED,
            or_(
                Study.state != StudyState.COMPLETE.value,
                Study.routed_generation < Study.completion_count,
                Study.series_held_at.is_not(None),
            ),
        ),
        (
            KeepReason.JOB_UNFINISHED,
            exists().where(job_of_study, Job.state.in_(UNFINISHED_JOB_STATES)),
        ),
        (
            KeepReason.JOB_ENDED_RECENTLY,
            exists().where(
                job_of_study,
                Job.state.in_(RETRIABLE_END_STATES),
                func.coalesce(Job.finished_at, Job.updated_at) >= cutoff,
            ),
        ),
        (
            KeepReason.DELIVERY_NOT_DELIVERED,
            exists().where(
                Delivery.study_instance_uid == Study.study_instance_uid,
                Delivery.state != DeliveryState.DELIVERED,
            ),
        ),
        (KeepReason.PRIOR_OF_UNFINISHED_JOB, unfinished_prior_user),
        (
            KeepReason.PULL_PENDING,
            exists().where(
                PulledStudy.study_instance_uid == Study.study_instance_uid,
                PulledStudy.state == "pending",
            ),
        ),
    ]


def purgeable(cutoff: datetime) -> ColumnElement[bool]:
    """The whole rule, for the UPDATE that decides."""
    return and_(
        old_enough(cutoff),
        has_unpurged_instances(),
        *(not_(condition) for _, condition in keep_conditions(cutoff)),
    )
