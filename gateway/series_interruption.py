"""Series whose association ended without A-RELEASE: a sender that died mid-series.

A sender that sent the first 37 of 300 slices in order and then died leaves nothing in what
arrived that shows a gap. How its association ended does: a sender that finished releases
it (A-RELEASE); one that died leaves an A-ABORT, a dropped connection, or our own abort. The
series it carried are marked interrupted (when, and how, without PHI); a later association
that carries the series and is released clears the mark. The completeness check before a
job is queued (gateway/routing/completeness.py) holds a study whose series is still marked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, update

from gateway.audit import AuditKind, Outcome, audit_row, record
from gateway.models import Series, Study, StudyState

_DETAIL_LENGTH = 256  # Series.interrupted_detail


@dataclass(frozen=True, slots=True)
class AssociationEnd:
    """The end of an association that stored instances: who, how, when, and what it
    carried (Series Instance UID -> instances acknowledged)."""

    ae_title: str
    address: str
    at: datetime
    series_counts: Mapping[str, int]
    ended_by: str | None  # None: released; else e.g. "A-ABORT from the sender"


def interruption_detail(end: AssociationEnd, count: int) -> str:
    noun = "instance" if count == 1 else "instances"
    return (
        f"association from {end.ae_title} at {end.address} ended by {end.ended_by} "
        f"after {count} {noun} of this series"
    )[:_DETAIL_LENGTH]


def _study_of(connection: Connection, series_uid: str) -> tuple[int, str] | None:
    row = connection.execute(
        select(Study.id, Study.study_instance_uid)
        .join(Series, Series.study_id == Study.id)
        .where(Series.series_instance_uid == series_uid)
    ).first()
    return None if row is None else (int(row[0]), str(row[1]))


def mark_interrupted(connection: Connection, end: AssociationEnd) -> list[str]:
    """Mark every series the association carried; returns their UIDs (audited each)."""
    marked = []
    for series_uid, count in sorted(end.series_counts.items()):
        study = _study_of(connection, series_uid)
        if study is None:  # removed since (retention): nothing to mark
            continue
        connection.execute(
            update(Series)
            .where(Series.series_instance_uid == series_uid)
            .values(interrupted_at=end.at, interrupted_detail=interruption_detail(end, count))
        )
        record(
            connection,
            audit_row(
                AuditKind.SERIES_INTERRUPTED,
                Outcome.FAILURE,
                actor=end.ae_title,
                source_address=end.address,
                study_instance_uid=study[1],
                detail={"series": series_uid, "instances": count, "ended_by": end.ended_by},
                occurred_at=end.at,
            ),
        )
        marked.append(series_uid)
    return marked


def clear_interrupted(connection: Connection, end: AssociationEnd) -> list[str]:
    """A released association carried these series: clear each mark set before it ended.

    A study already held for such a mark and not reopened by new instances (the sender
    resent only what we had) is reopened here, so it completes again and is judged again.
    Returns the UIDs of the series cleared.
    """
    cleared = []
    for series_uid in sorted(end.series_counts):
        row = connection.execute(
            select(Series.interrupted_detail, Study.id, Study.study_instance_uid)
            .join(Study, Series.study_id == Study.id)
            .where(Series.series_instance_uid == series_uid, Series.interrupted_at < end.at)
        ).first()
        if row is None:
            continue
        was, study_id, study_uid = row
        connection.execute(
            update(Series)
            .where(Series.series_instance_uid == series_uid, Series.interrupted_at < end.at)
            .values(interrupted_at=None, interrupted_detail=None)
        )
        rows = [
            audit_row(
                AuditKind.SERIES_INTERRUPTION_CLEARED,
                actor=end.ae_title,
                source_address=end.address,
                study_instance_uid=study_uid,
                detail={
                    "series": series_uid,
                    "instances": end.series_counts[series_uid],
                    "was": was,
                },
                occurred_at=end.at,
            )
        ]
        reopened = connection.execute(
            update(Study)
            .where(
                Study.id == study_id,
                Study.state == StudyState.COMPLETE,
                Study.series_held_at.is_not(None),
            )
            .values(state=StudyState.UPDATED, reopened_at=end.at)
        ).rowcount
        if reopened == 1:
            rows.append(
                audit_row(
                    AuditKind.STUDY_UPDATED,
                    actor=end.ae_title,
                    study_instance_uid=study_uid,
                    detail={"reason": f"interrupted series {series_uid} sent again and released"},
                    occurred_at=end.at,
                )
            )
        record(connection, *rows)
        cleared.append(series_uid)
    return cleared
