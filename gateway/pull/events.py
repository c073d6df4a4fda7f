"""Audit events of the pull: UIDs, counts, transports and reasons only (never an accession
number or patient ID)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from gateway.audit import AuditKind, Outcome, audit_row, record
from gateway.database import writer_queue
from gateway.pull.errors import SourceError


def pull_audit_row(
    kind: AuditKind,
    outcome: Outcome = Outcome.SUCCESS,
    *,
    actor: str | None = "pull",
    study_instance_uid: str | None = None,
    detail: dict[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """An audit row of the pull (actor "pull" unless told otherwise)."""
    return audit_row(
        kind,
        outcome,
        actor=actor,
        study_instance_uid=study_instance_uid,
        detail=detail,
        occurred_at=occurred_at,
    )


def retry_auditor(
    engine: Engine,
    max_attempts: int,
    transport: str,
    *,
    step: str,
    study_instance_uid: str | None = None,
    run_id: int | None = None,
) -> Callable[[int, SourceError, float], None]:
    """An `on_retry` for with_retries that writes one pull.retry event per failed attempt."""

    def audit(attempt: int, error: SourceError, delay: float) -> None:
        context = {} if run_id is None else {"run": run_id}
        with writer_queue(engine), engine.begin() as connection:
            record(
                connection,
                pull_audit_row(
                    AuditKind.PULL_RETRY,
                    Outcome.FAILURE,
                    study_instance_uid=study_instance_uid,
                    detail={
                        **context,
                        "step": step,
                        "attempt": attempt,
                        "max_attempts": max_attempts,
                        "next_in_s": round(delay, 3),
                        "transport": transport,
                        "reason": error.reason,
                    },
                ),
            )

    return audit
