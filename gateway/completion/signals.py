"""Completion signals in the database: which instances an MPPS or a storage commitment lists,
how many of them are stored, and completing the studies a fulfilled signal names.

An instance counts as stored when its row is committed with the same SOP Class UID: the
spool file was fsynced before that commit (gateway/dicom/spool.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    delete,
    distinct,
    func,
    insert,
    select,
    update,
)

from gateway.audit import AuditKind, audit_row, record
from gateway.models import (
    ExpectedInstance,
    Instance,
    PerformedProcedureStep,
    Series,
    StorageCommitment,
    Study,
    StudyState,
)

OPEN_STATES = (StudyState.RECEIVING, StudyState.UPDATED)
IN_PROGRESS, COMPLETED, DISCONTINUED = "IN PROGRESS", "COMPLETED", "DISCONTINUED"
MPPS_SIGNAL = "MPPS"
COMMITMENT_SIGNAL = "storage commitment"
QUIET_PERIOD_SIGNAL = "quiet period"


@dataclass(frozen=True, slots=True)
class ListedInstance:
    series_instance_uid: str | None
    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True)
class Tally:
    listed: int
    stored: int

    @property
    def fulfilled(self) -> bool:
        return self.listed > 0 and self.stored == self.listed


@dataclass(frozen=True, slots=True)
class PendingSignals:
    """What a listener checks each stored instance against (no database round trip)."""

    studies: frozenset[str] = frozenset()
    series: frozenset[str] = frozenset()
    sop_instances: frozenset[str] = frozenset()

    def concerns(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> bool:
        return (
            study_uid in self.studies
            or series_uid in self.series
            or sop_instance_uid in self.sop_instances
        )


def _stored_join() -> ColumnElement[bool]:
    return and_(
        Instance.sop_instance_uid == ExpectedInstance.sop_instance_uid,
        Instance.sop_class_uid == ExpectedInstance.sop_class_uid,
    )


def replace_listed(
    connection: Connection,
    instances: Sequence[ListedInstance],
    *,
    mpps_id: int | None = None,
    commitment_id: int | None = None,
) -> None:
    """The signal's list, replacing what it listed before (an N-SET repeats the sequence)."""
    owner = (
        ExpectedInstance.mpps_id == mpps_id
        if mpps_id is not None
        else ExpectedInstance.commitment_id == commitment_id
    )
    connection.execute(delete(ExpectedInstance).where(owner))
    rows = [
        {
            "mpps_id": mpps_id,
            "commitment_id": commitment_id,
            "series_instance_uid": item.series_instance_uid,
            "sop_class_uid": item.sop_class_uid,
            "sop_instance_uid": item.sop_instance_uid,
        }
        for item in dict.fromkeys(instances)  # a repeated item counts once
    ]
    if rows:
        connection.execute(insert(ExpectedInstance), rows)


def tally(
    connection: Connection, *, mpps_id: int | None = None, commitment_id: int | None = None
) -> Tally:
    owner = (
        ExpectedInstance.mpps_id == mpps_id
        if mpps_id is not None
        else ExpectedInstance.commitment_id == commitment_id
    )
    listed, stored = connection.execute(
        select(func.count(ExpectedInstance.id), func.count(Instance.id))
        .select_from(ExpectedInstance)
        .outerjoin(Instance, _stored_join())
        .where(owner)
    ).one()
    return Tally(int(listed), int(stored))


def studies_of_listed(
    connection: Connection, *, mpps_id: int | None = None, commitment_id: int | None = None
) -> list[str]:
    """The studies the stored instances of a signal belong to."""
    owner = (
        ExpectedInstance.mpps_id == mpps_id
        if mpps_id is not None
        else ExpectedInstance.commitment_id == commitment_id
    )
    return list(
        connection.execute(
            select(distinct(Study.study_instance_uid))
            .select_from(ExpectedInstance)
            .join(Instance, _stored_join())
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
            .where(owner)
        ).scalars()
    )


def complete_studies(
    connection: Connection,
    study_uids: Iterable[str],
    signal: str,
    detail: dict[str, object],
    now: datetime,
) -> list[str]:
    """Mark the open ones among `study_uids` complete (conditional: once per signal)."""
    completed = []
    for study_uid in study_uids:
        done = connection.execute(
            update(Study)
            .where(Study.study_instance_uid == study_uid, Study.state.in_(OPEN_STATES))
            .values(
                state=StudyState.COMPLETE,
                completed_at=now,
                completion_count=Study.completion_count + 1,
                completed_by=signal,
            )
        ).rowcount
        if done != 1:
            continue
        completed.append(study_uid)
        count = connection.execute(
            select(Study.instance_count).where(Study.study_instance_uid == study_uid)
        ).scalar()
        record(
            connection,
            audit_row(
                AuditKind.STUDY_COMPLETE,
                actor="assembly",
                study_instance_uid=study_uid,
                detail={"instances": count, "signal": signal, **detail},
                occurred_at=now,
            ),
        )
    return completed


def settle_completed_mpps(
    connection: Connection, now: datetime, only_studies: Iterable[str] | None = None
) -> list[str]:
    """Every COMPLETED, unsettled MPPS whose listed instances are all stored completes the
    studies they belong to, then is settled. Returns the studies completed."""
    query = select(PerformedProcedureStep.id, PerformedProcedureStep.sop_instance_uid).where(
        PerformedProcedureStep.status == COMPLETED, PerformedProcedureStep.settled_at.is_(None)
    )
    if only_studies is not None:
        query = query.where(PerformedProcedureStep.study_instance_uid.in_(list(only_studies)))
    completed: list[str] = []
    for mpps_id, mpps_uid in connection.execute(query).all():
        counts = tally(connection, mpps_id=mpps_id)
        if counts.listed and not counts.fulfilled:
            continue  # still waiting; the study page says for what
        claimed = connection.execute(
            update(PerformedProcedureStep)
            .where(
                PerformedProcedureStep.id == mpps_id, PerformedProcedureStep.settled_at.is_(None)
            )
            .values(settled_at=now)
        ).rowcount
        if claimed != 1:
            continue  # another process settled it
        studies = studies_of_listed(connection, mpps_id=mpps_id)
        done = complete_studies(
            connection, studies, MPPS_SIGNAL, {"mpps": mpps_uid, "listed": counts.listed}, now
        )
        completed += done
        record(
            connection,
            audit_row(
                AuditKind.MPPS_SETTLED,
                actor="assembly",
                study_instance_uid=studies[0] if len(studies) == 1 else None,
                sop_instance_uid=mpps_uid,
                detail={
                    "listed": counts.listed,
                    "studies_completed": len(done),
                    "outcome": "all listed instances stored"
                    if counts.listed
                    else "no instances listed: nothing to complete",
                },
                occurred_at=now,
            ),
        )
    return completed


def settle_commitments(connection: Connection, now: datetime) -> list[str]:
    """A storage commitment whose listed instances are all stored is the sender saying the
    study (or series) is sent: complete the studies those instances belong to."""
    completed: list[str] = []
    rows = connection.execute(
        select(StorageCommitment.id, StorageCommitment.transaction_uid).where(
            StorageCommitment.settled_at.is_(None)
        )
    ).all()
    for commitment_id, transaction_uid in rows:
        counts = tally(connection, commitment_id=commitment_id)
        if not counts.fulfilled:
            continue
        claimed = connection.execute(
            update(StorageCommitment)
            .where(StorageCommitment.id == commitment_id, StorageCommitment.settled_at.is_(None))
            .values(settled_at=now)
        ).rowcount
        if claimed == 1:
            completed += complete_studies(
                connection,
                studies_of_listed(connection, commitment_id=commitment_id),
                COMMITMENT_SIGNAL,
                {"transaction": transaction_uid, "listed": counts.listed},
                now,
            )
    return completed


def pending_signals(connection: Connection) -> PendingSignals:
    """Studies and series of COMPLETED MPPS still waiting for instances, and the instances
    of storage commitments not yet settled."""
    waiting_mpps = and_(
        PerformedProcedureStep.status == COMPLETED, PerformedProcedureStep.settled_at.is_(None)
    )
    studies = connection.execute(
        select(distinct(PerformedProcedureStep.study_instance_uid)).where(
            waiting_mpps, PerformedProcedureStep.study_instance_uid.is_not(None)
        )
    ).scalars()
    series = connection.execute(
        select(distinct(ExpectedInstance.series_instance_uid))
        .join(PerformedProcedureStep, ExpectedInstance.mpps_id == PerformedProcedureStep.id)
        .where(waiting_mpps, ExpectedInstance.series_instance_uid.is_not(None))
    ).scalars()
    sops = connection.execute(
        select(ExpectedInstance.sop_instance_uid)
        .join(StorageCommitment, ExpectedInstance.commitment_id == StorageCommitment.id)
        .where(StorageCommitment.settled_at.is_(None))
    ).scalars()
    return PendingSignals(
        frozenset(str(s) for s in studies),
        frozenset(str(s) for s in series),
        frozenset(str(s) for s in sops),
    )


def mpps_waiting_reason(connection: Connection, study_uid: str) -> str | None:
    """For the study page: a COMPLETED MPPS of this study still waiting for instances."""
    rows = connection.execute(
        select(PerformedProcedureStep.id, PerformedProcedureStep.status).where(
            PerformedProcedureStep.study_instance_uid == study_uid,
            PerformedProcedureStep.settled_at.is_(None),
            PerformedProcedureStep.status == COMPLETED,
        )
    ).all()
    reasons = []
    for mpps_id, _status in rows:
        counts = tally(connection, mpps_id=mpps_id)
        if counts.listed and not counts.fulfilled:
            state = connection.execute(
                select(Study.state).where(Study.study_instance_uid == study_uid)
            ).scalar()
            then = (
                "waiting for the quiet period"
                if state in OPEN_STATES
                else "the quiet period completed the study"
            )
            reasons.append(
                f"MPPS COMPLETED lists {counts.listed} instances, {counts.stored} stored; {then}"
            )
    discontinued = connection.execute(
        select(PerformedProcedureStep.discontinued_reason).where(
            PerformedProcedureStep.study_instance_uid == study_uid,
            PerformedProcedureStep.status == DISCONTINUED,
        )
    ).scalars()
    reasons += [
        f"MPPS DISCONTINUED ({reason or 'no reason given'}); the quiet period decides"
        for reason in discontinued
    ]
    return "; ".join(reasons) or None
