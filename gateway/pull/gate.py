"""What the router asks of the pull: a study whose pull is under way or failed (and was
never pulled whole) is not routed yet, so a half study never reaches a model; a study pulled
only as a prior for comparison is not routed at all."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, exists, select
from sqlalchemy.sql.elements import ColumnElement

from gateway.models import PulledStudy
from gateway.pull.ledger import PullState, Purpose


def pull_unfinished(study_uid: Any) -> ColumnElement[bool]:
    """SQL: the study (its UID column or value) has a pull pending or failed, none pulled."""
    unfinished = exists().where(
        PulledStudy.study_instance_uid == study_uid,
        PulledStudy.state != PullState.PULLED.value,
    )
    pulled = exists().where(
        PulledStudy.study_instance_uid == study_uid,
        PulledStudy.state == PullState.PULLED.value,
    )
    return and_(unfinished, ~pulled)


def pulled_only_as_prior(connection: Connection, study_uid: str) -> bool:
    purposes = set(
        connection.execute(
            select(PulledStudy.purpose).where(PulledStudy.study_instance_uid == study_uid)
        ).scalars()
    )
    return purposes == {Purpose.PRIOR.value}
