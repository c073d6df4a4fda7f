"""The pull's rows: runs (queued, running, done, failed), the studies of each run by batch
(pending, pulled, failed), counters, and an audit event per change in the same transaction."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, Engine, case, func, insert, select, update

from gateway.audit import AuditKind, Outcome, record, utcnow
from gateway.database import writer_queue
from gateway.models import PulledStudy, PullRun
from gateway.pull.criteria import PullCriteria
from gateway.pull.events import pull_audit_row


class RunState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"  # every study tried; some may have failed (counted)
    FAILED = "failed"  # the run itself failed: the query could not be answered


class PullState(enum.StrEnum):
    PENDING = "pending"
    PULLED = "pulled"
    FAILED = "failed"


class Purpose(enum.StrEnum):
    RETROSPECTIVE = "retrospective"
    PRIOR = "prior"


@dataclass(frozen=True)
class BatchProgress:
    batch: int
    studies: int
    pulled: int
    failed: int

    @property
    def pending(self) -> int:
        return self.studies - self.pulled - self.failed


def describe_criteria(criteria: dict[str, Any]) -> str:
    """A run's criteria as stored (accession numbers maybe already a count), for display."""
    accessions = criteria.get("accession_numbers")
    if accessions:
        count = accessions if isinstance(accessions, int) else len(accessions)
        return f"{count} accession number(s)"
    uids = criteria.get("study_instance_uids")
    if uids:
        return f"{len(uids)} Study Instance UID(s)"
    span = f"{criteria.get('date_from') or '...'} to {criteria.get('date_to') or '...'}"
    modality = criteria.get("modality")
    return f"studies {span}" + (f", modality {modality}" if modality else "")


def create_run(
    engine: Engine,
    criteria: PullCriteria,
    *,
    transport: str,
    batch_size: int,
    requested_by: str,
    started: bool = False,
) -> int:
    """A queued run, for the gateway's puller; `started`: running already, for the caller
    to carry out itself (the CLI), so no puller takes it meanwhile."""
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        run_id = connection.execute(
            insert(PullRun)
            .values(
                state=(RunState.RUNNING if started else RunState.QUEUED).value,
                started_at=now if started else None,
                criteria=criteria.model_dump(),
                transport=transport,
                requested_by=requested_by[:128],
                batch_size=batch_size,
                studies_total=0,
                studies_pulled=0,
                studies_failed=0,
                created_at=now,
                updated_at=now,
            )
            .returning(PullRun.id)
        ).scalar_one()
        record(
            connection,
            pull_audit_row(
                AuditKind.PULL_RUN_QUEUED,
                actor=requested_by[:128],
                detail={"run": run_id, "criteria": criteria.summary(), "transport": transport},
                occurred_at=now,
            ),
        )
    return int(run_id)


def claim_run(engine: Engine, run_id: int | None = None) -> tuple[int, PullCriteria | None] | None:
    """Take a queued run (the oldest, or `run_id`) for this process: (id, criteria). The
    criteria are None once its studies were found (a run taken up again): their accession
    numbers are gone by then, and the studies are what it goes on with."""
    with writer_queue(engine), engine.begin() as connection:
        query = select(PullRun.id, PullRun.criteria).where(PullRun.state == RunState.QUEUED.value)
        if run_id is not None:
            query = query.where(PullRun.id == run_id)
        row = connection.execute(query.order_by(PullRun.id).limit(1)).first()
        if row is None:
            return None
        now = utcnow()
        claimed = connection.execute(
            update(PullRun)
            .where(PullRun.id == row.id, PullRun.state == RunState.QUEUED.value)
            .values(state=RunState.RUNNING.value, started_at=now, updated_at=now)
        ).rowcount
        if claimed != 1:
            return None
        record(
            connection,
            pull_audit_row(AuditKind.PULL_RUN_STARTED, detail={"run": row.id}, occurred_at=now),
        )
    try:
        return int(row.id), PullCriteria.model_validate(row.criteria)
    except ValidationError:
        return int(row.id), None


def add_studies(
    engine: Engine, run_id: int, criteria: PullCriteria, study_uids: Sequence[str], batch_size: int
) -> None:
    """The run's studies, pending, in batches of `batch_size`; the criteria lose their
    accession numbers (only their count stays)."""
    now = utcnow()
    rows = [
        {
            "run_id": run_id,
            "batch": index // batch_size + 1,
            "purpose": Purpose.RETROSPECTIVE.value,
            "study_instance_uid": uid,
            "state": PullState.PENDING.value,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        for index, uid in enumerate(study_uids)
    ]
    with writer_queue(engine), engine.begin() as connection:
        if rows:
            connection.execute(insert(PulledStudy), rows)
        connection.execute(
            update(PullRun)
            .where(PullRun.id == run_id)
            .values(criteria=criteria.redacted(), studies_total=len(rows), updated_at=now)
        )


def start_prior_pull(engine: Engine, study_uid: str) -> int:
    """A pending row for a prior being pulled (no run): the router holds it meanwhile."""
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        return int(
            connection.execute(
                insert(PulledStudy)
                .values(
                    run_id=None,
                    batch=None,
                    purpose=Purpose.PRIOR.value,
                    study_instance_uid=study_uid,
                    state=PullState.PENDING.value,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
                .returning(PulledStudy.id)
            ).scalar_one()
        )


def has_studies(engine: Engine, run_id: int) -> bool:
    with engine.connect() as connection:
        return (
            connection.execute(
                select(PulledStudy.id).where(PulledStudy.run_id == run_id).limit(1)
            ).first()
            is not None
        )


def requeue_run(engine: Engine, run_id: int) -> None:
    """Stopped midway (the gateway shuts down): queued again, to resume where it was."""
    with writer_queue(engine), engine.begin() as connection:
        connection.execute(
            update(PullRun)
            .where(PullRun.id == run_id, PullRun.state == RunState.RUNNING.value)
            .values(state=RunState.QUEUED.value, updated_at=utcnow())
        )


def pending_of_run(engine: Engine, run_id: int) -> list[tuple[int, int, str]]:
    """(row id, batch, Study Instance UID) of the run's studies not tried yet, in order."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(PulledStudy.id, PulledStudy.batch, PulledStudy.study_instance_uid)
            .where(PulledStudy.run_id == run_id, PulledStudy.state == PullState.PENDING.value)
            .order_by(PulledStudy.batch, PulledStudy.id)
        ).all()
    return [(int(r.id), int(r.batch or 0), str(r.study_instance_uid)) for r in rows]


def _count_on_run(connection: Connection, run_id: int | None, pulled: bool, now: datetime) -> None:
    if run_id is None:
        return
    column = PullRun.studies_pulled if pulled else PullRun.studies_failed
    connection.execute(
        update(PullRun).where(PullRun.id == run_id).values({column: column + 1, "updated_at": now})
    )


def mark_pulled(
    engine: Engine,
    row_id: int,
    *,
    listed: int,
    attempts: int,
    retrieved: bool,
    transport: str,
) -> None:
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        row = connection.execute(
            select(PulledStudy.run_id, PulledStudy.batch, PulledStudy.study_instance_uid).where(
                PulledStudy.id == row_id
            )
        ).one()
        connection.execute(
            update(PulledStudy)
            .where(PulledStudy.id == row_id)
            .values(
                state=PullState.PULLED.value,
                instances_listed=listed,
                instances_stored=listed,
                attempts=attempts,
                reason=None if retrieved else "already stored: nothing retrieved",
                pulled_at=now,
                updated_at=now,
            )
        )
        _count_on_run(connection, row.run_id, True, now)
        record(
            connection,
            pull_audit_row(
                AuditKind.PULL_STUDY_PULLED,
                study_instance_uid=row.study_instance_uid,
                detail={
                    "run": row.run_id,
                    "batch": row.batch,
                    "instances": listed,
                    "attempts": attempts,
                    "transport": transport,
                    "retrieved": retrieved,
                },
                occurred_at=now,
            ),
        )


def mark_failed(engine: Engine, row_id: int, *, reason: str, attempts: int, transport: str) -> None:
    """No pulled mark: the study's instances that arrived stay stored, unrouted."""
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        row = connection.execute(
            select(PulledStudy.run_id, PulledStudy.batch, PulledStudy.study_instance_uid).where(
                PulledStudy.id == row_id
            )
        ).one()
        connection.execute(
            update(PulledStudy)
            .where(PulledStudy.id == row_id)
            .values(state=PullState.FAILED.value, attempts=attempts, reason=reason, updated_at=now)
        )
        _count_on_run(connection, row.run_id, False, now)
        record(
            connection,
            pull_audit_row(
                AuditKind.PULL_STUDY_FAILED,
                Outcome.FAILURE,
                study_instance_uid=row.study_instance_uid,
                detail={
                    "run": row.run_id,
                    "batch": row.batch,
                    "attempts": attempts,
                    "transport": transport,
                    "reason": reason,
                },
                occurred_at=now,
            ),
        )


def finish_run(engine: Engine, run_id: int, error: str | None = None) -> None:
    now = utcnow()
    state = RunState.DONE if error is None else RunState.FAILED
    with writer_queue(engine), engine.begin() as connection:
        connection.execute(
            update(PullRun)
            .where(PullRun.id == run_id)
            .values(state=state.value, error=error, finished_at=now, updated_at=now)
        )
        counts = connection.execute(
            select(PullRun.studies_total, PullRun.studies_pulled, PullRun.studies_failed).where(
                PullRun.id == run_id
            )
        ).one()
        record(
            connection,
            pull_audit_row(
                AuditKind.PULL_RUN_FINISHED if error is None else AuditKind.PULL_RUN_FAILED,
                Outcome.SUCCESS if error is None else Outcome.FAILURE,
                detail={
                    "run": run_id,
                    "studies": counts.studies_total,
                    "pulled": counts.studies_pulled,
                    "failed": counts.studies_failed,
                    **({} if error is None else {"reason": error}),
                },
                occurred_at=now,
            ),
        )


def batch_progress(connection: Connection, run_id: int) -> list[BatchProgress]:
    pulled = func.sum(case((PulledStudy.state == PullState.PULLED.value, 1), else_=0))
    failed = func.sum(case((PulledStudy.state == PullState.FAILED.value, 1), else_=0))
    rows = connection.execute(
        select(PulledStudy.batch, func.count(), pulled, failed)
        .where(PulledStudy.run_id == run_id)
        .group_by(PulledStudy.batch)
        .order_by(PulledStudy.batch)
    ).all()
    return [BatchProgress(int(b or 0), int(n), int(p or 0), int(f or 0)) for b, n, p, f in rows]


def run_row(connection: Connection, run_id: int) -> Any:
    return connection.execute(select(PullRun).where(PullRun.id == run_id)).first()


def recent_runs(connection: Connection, limit: int = 20) -> list[Any]:
    return list(connection.execute(select(PullRun).order_by(PullRun.id.desc()).limit(limit)).all())


def studies_of_run(connection: Connection, run_id: int) -> list[Any]:
    return list(
        connection.execute(
            select(PulledStudy)
            .where(PulledStudy.run_id == run_id)
            .order_by(PulledStudy.batch, PulledStudy.id)
        ).all()
    )
