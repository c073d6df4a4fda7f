"""Audit events: one row per step, written in the same transaction as the state change.

No patient names or IDs go in here: only UIDs, AE titles, addresses and technical detail.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, insert

from gateway.models import AuditEvent


class AuditKind(enum.StrEnum):
    ASSOCIATION_ACCEPTED = "association.accepted"
    ASSOCIATION_REJECTED = "association.rejected"
    INSTANCE_STORED = "instance.stored"
    INSTANCE_DUPLICATE = "instance.duplicate"
    INSTANCE_REFUSED = "instance.refused"
    INSTANCE_REPAIRED = "instance.repaired"
    STUDY_COMPLETE = "study.complete"
    STUDY_UPDATED = "study.updated"
    MPPS_CREATED = "mpps.created"  # N-CREATE (IN PROGRESS)
    MPPS_UPDATED = "mpps.updated"  # N-SET: status, listed instances
    MPPS_REFUSED = "mpps.refused"  # N-CREATE/N-SET answered with a failure status
    MPPS_SETTLED = "mpps.settled"  # completed its study, or discontinued (quiet period then)
    COMMITMENT_REQUESTED = "commitment.requested"  # storage commitment N-ACTION
    COMMITMENT_REFUSED = "commitment.refused"
    COMMITMENT_REPORTED = "commitment.reported"  # N-EVENT-REPORT answered by the requester
    COMMITMENT_REPORT_FAILED = "commitment.report_failed"
    SERIES_TRIGGERED = "series.triggered"  # a rule started on a complete series
    RESULTS_STORED = "results.stored"
    RESULTS_UNSUPPORTED = "results.unsupported"
    DELIVERY_QUEUED = "delivery.queued"
    DELIVERY_DELIVERED = "delivery.delivered"
    DELIVERY_RETRY = "delivery.retry"
    DELIVERY_FAILED = "delivery.failed"
    STUDY_ROUTED = "study.routed"
    STUDY_NOT_ROUTED = "study.not_routed"
    STUDY_HELD = "study.held"  # its selected series looks incomplete: no job yet
    STUDY_RELEASED = "study.released"  # late instances completed the held series
    SERIES_INTERRUPTED = "series.interrupted"  # its association ended without A-RELEASE
    SERIES_INTERRUPTION_CLEARED = "series.interruption_cleared"  # sent again, released
    JOB_QUEUED = "job.queued"
    JOB_STARTED = "job.started"
    JOB_INFERRED = "job.inferred"
    JOB_RESULTS_BUILT = "job.results_built"
    JOB_DELIVERED = "job.delivered"
    JOB_RETRY = "job.retry"
    JOB_FAILED = "job.failed"
    JOB_CANCELLED = "job.cancelled"
    JOB_REQUEUED = "job.requeued"
    JOB_SKIPPED = "job.skipped"  # another runner holds the job's lease: this one did nothing
    RULE_SEEDED = "rule.seeded"
    RULE_CREATED = "rule.created"
    RULE_UPDATED = "rule.updated"
    RULE_ENABLED = "rule.enabled"
    RULE_DISABLED = "rule.disabled"
    RULE_MOVED = "rule.moved"
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"
    USER_LOGIN = "user.login"
    USER_LOGIN_FAILED = "user.login_failed"
    USER_LOGIN_BLOCKED = "user.login_blocked"
    USER_LOGOUT = "user.logout"
    USER_LOGIN_LOCKED = "user.login_locked"  # a login limit was reached
    USER_SESSION_ENDED = "user.session_ended"  # an admin ended a web session
    DESTINATION_TESTED = "destination.tested"
    PATIENT_IDENTITY_VIEWED = "study.identity_viewed"
    STUDIES_SEARCHED_BY_IDENTIFIER = "studies.identifier_searched"  # which fields, no values
    DESTINATION_SEEDED = "destination.seeded"
    DESTINATION_CREATED = "destination.created"
    DESTINATION_UPDATED = "destination.updated"
    DESTINATION_ENABLED = "destination.enabled"
    DESTINATION_DISABLED = "destination.disabled"
    SPOOL_ORPHANS_REMOVED = "spool.orphans_removed"  # files no instance row names, past grace
    STUDY_PURGED = "study.purged"  # retention: its spool files removed, rows kept
    DICOMWEB_REQUEST = "dicomweb.request"  # one per request: client, route, UIDs, outcome
    API_TOKEN_CREATED = "api_token.created"
    API_TOKEN_REVOKED = "api_token.revoked"
    PULL_RUN_QUEUED = "pull.run_queued"
    PULL_RUN_STARTED = "pull.run_started"
    PULL_RUN_FINISHED = "pull.run_finished"
    PULL_RUN_FAILED = "pull.run_failed"
    PULL_DRY_RUN = "pull.dry_run"
    PULL_STUDY_PULLED = "pull.study_pulled"
    PULL_STUDY_FAILED = "pull.study_failed"
    PULL_RETRY = "pull.retry"
    PRIOR_REQUESTED = "prior.requested"
    PRIOR_FOUND = "prior.found"
    PRIOR_NONE = "prior.none"
    PRIOR_TIMED_OUT = "prior.timed_out"
    PRIOR_FAILED = "prior.failed"
    SHADOW_JOB_QUEUED = "shadow.job_queued"  # a rule's shadow pipeline beside the primary job
    SHADOW_NOT_RUN = "shadow.not_run"  # the rule names a shadow pipeline the registry lacks
    SHADOW_JOB_STORED = "shadow.job_stored"  # results built and stored, never delivered
    SHADOW_COMPARED = "shadow.compared"  # shadow against primary: findings, Dice, scores
    RULE_SHADOW_SET = "rule.shadow_set"  # an admin started (or changed) a rule's shadow
    RULE_SHADOW_CLEARED = "rule.shadow_cleared"
    RULE_PROMOTED = "rule.promoted"  # the shadow pipeline became the rule's pipeline


class Outcome(enum.StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"


def utcnow() -> datetime:
    return datetime.now(UTC)


def audit_row(
    kind: AuditKind,
    outcome: Outcome = Outcome.SUCCESS,
    *,
    actor: str | None = None,
    source_address: str | None = None,
    study_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    detail: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "occurred_at": occurred_at or utcnow(),
        "kind": kind.value,
        "outcome": outcome.value,
        "actor": actor,
        "source_address": source_address,
        "study_instance_uid": study_instance_uid,
        "sop_instance_uid": sop_instance_uid,
        "detail": detail,
    }


def record(connection: Connection, *rows: dict[str, Any]) -> None:
    """Append audit rows inside the caller's transaction."""
    if rows:
        connection.execute(insert(AuditEvent), list(rows))
