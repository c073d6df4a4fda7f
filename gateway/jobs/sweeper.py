"""Jobs that always end: the conditional "fail this job" every last-resort path uses, and the
sweeper that finds jobs stuck in a running state past a deadline.

A job can be left running with nobody to finish it: its worker was killed where nothing
could record it (hard time limit, OOM kill, power loss after the message was acknowledged),
or the database was down when the task tried to record the failure. The sweeper runs in the
router's loop (one or several processes): every change is a conditional UPDATE on the state
and `updated_at` it saw, so only one process acts on a job and writes its audit event.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select, update

from gateway.audit import AuditKind, Outcome, audit_row, record, utcnow
from gateway.database import writer_queue
from gateway.models import TERMINAL_JOB_STATES, Job, JobState
from gateway.settings import GatewaySettings

LOGGER = logging.getLogger(__name__)

RUNNING_JOB_STATES = (JobState.RUNNING, JobState.INFERRED, JobState.RESULTS_BUILT)
"""Non-terminal states in which a worker owns the job (queued ones are the router's)."""


def fail_unfinished_job(
    engine: Engine,
    job_id: int,
    reason: str,
    actor: str,
    writers: AbstractContextManager[object] | None = None,
) -> bool:
    """Mark the job failed with `reason` unless it already ended (delivered, failed or
    cancelled); one `job.failed` audit event in the same transaction. Returns whether this
    call ended it (False: it had ended already, or there is no such job). `writers`: the
    caller's writer queue (gateway/database.py); without one SQLite's own locking serves."""
    now = utcnow()
    with writers or nullcontext(), engine.begin() as connection:
        study_uid = connection.execute(
            update(Job)
            .where(Job.id == job_id, Job.state.not_in(TERMINAL_JOB_STATES))
            .values(state=JobState.FAILED, last_error=reason, finished_at=now, updated_at=now)
            .returning(Job.study_instance_uid)
        ).scalar()
        if study_uid is None:
            return False
        record(
            connection,
            audit_row(
                AuditKind.JOB_FAILED,
                Outcome.FAILURE,
                actor=actor,
                study_instance_uid=study_uid,
                detail={"job": job_id, "reason": reason},
                occurred_at=now,
            ),
        )
    LOGGER.warning("job %d failed: %s", job_id, reason)
    return True


@dataclass
class SweepResult:
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def _aware(value: datetime) -> datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return value if value.tzinfo else value.replace(tzinfo=utcnow().tzinfo)


class StuckJobSweeper:
    """Queues a stuck job again while it has attempts left (the task is idempotent: done
    stages are skipped), else fails it with the reason."""

    def __init__(self, settings: GatewaySettings, engine: Engine) -> None:
        self.queue = settings.queue
        self.engine = engine
        self._writers = writer_queue(engine)

    @property
    def max_attempts(self) -> int:
        return self.queue.max_retries + 1

    def sweep(self, now: datetime | None = None) -> SweepResult:
        now = now or utcnow()
        deadline = now - timedelta(seconds=self.queue.stuck_job_after_s)
        with self.engine.connect() as connection:
            stuck = connection.execute(
                select(Job.id, Job.state, Job.attempts, Job.updated_at, Job.study_instance_uid)
                .where(Job.state.in_(RUNNING_JOB_STATES), Job.updated_at < deadline)
                .order_by(Job.id)
            ).all()
        result = SweepResult()
        for job_id, state, attempts, updated_at, study_uid in stuck:
            quiet_s = round((now - _aware(updated_at)).total_seconds())
            requeue = attempts < self.max_attempts
            if requeue:
                reason = (
                    f"stuck in {state.value} with no update for {quiet_s} s (more than "
                    f"stuck_job_after_s {self.queue.stuck_job_after_s:g}): queued again "
                    f"after attempt {attempts} of {self.max_attempts}"
                )
                values: dict[str, Any] = {
                    "state": JobState.QUEUED,
                    "enqueued_at": None,
                    "last_error": reason,
                }
                kind, outcome = AuditKind.JOB_REQUEUED, Outcome.SUCCESS
            else:
                reason = (
                    f"stuck in {state.value} with no update for {quiet_s} s (more than "
                    f"stuck_job_after_s {self.queue.stuck_job_after_s:g}) after the last of "
                    f"{attempts} attempts"
                )
                values = {"state": JobState.FAILED, "finished_at": now, "last_error": reason}
                kind, outcome = AuditKind.JOB_FAILED, Outcome.FAILURE
            with self._writers, self.engine.begin() as connection:
                claimed = connection.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == state, Job.updated_at == updated_at)
                    .values(updated_at=now, **values)
                ).rowcount
                if claimed != 1:
                    continue  # another sweeper, the worker or an operator moved it first
                record(
                    connection,
                    audit_row(
                        kind,
                        outcome,
                        actor="sweeper",
                        study_instance_uid=study_uid,
                        detail={"job": job_id, "was": state.value, "reason": reason},
                        occurred_at=now,
                    ),
                )
            (result.requeued if requeue else result.failed).append(int(job_id))
            LOGGER.warning("job %d %s", job_id, reason)
        return result
