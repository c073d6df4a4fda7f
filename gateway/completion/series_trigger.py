"""Is one series complete before its study is? The signals a `trigger = "series"` rule uses.

In order: an MPPS COMPLETED listing the series with every listed instance of it stored; a
storage commitment naming instances of the series, all stored; Images in Acquisition
(0020,1002) set on every instance and reached (per acquisition, with no gap in positions or
numbers: gateway/routing/completeness.py); the rule's `series_quiet_period_s` passed since
the series' last instance. None when none of them says so (the study's completion decides).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, and_, func, select

from gateway.completion.signals import COMMITMENT_SIGNAL, COMPLETED, MPPS_SIGNAL, tally
from gateway.models import (
    ExpectedInstance,
    Instance,
    PerformedProcedureStep,
    Series,
    SeriesTrigger,
)
from gateway.routing.completeness import check_series_completeness
from gateway.routing.config import RuleSettings, SeriesCompletenessSettings

IMAGES_IN_ACQUISITION_SIGNAL = "Images in Acquisition"
SERIES_QUIET_PERIOD_SIGNAL = "series quiet period"


def _mpps_lists_all(connection: Connection, series_uid: str) -> bool:
    listed, stored = connection.execute(
        select(func.count(ExpectedInstance.id), func.count(Instance.id))
        .select_from(ExpectedInstance)
        .join(PerformedProcedureStep, ExpectedInstance.mpps_id == PerformedProcedureStep.id)
        .outerjoin(
            Instance,
            and_(
                Instance.sop_instance_uid == ExpectedInstance.sop_instance_uid,
                Instance.sop_class_uid == ExpectedInstance.sop_class_uid,
            ),
        )
        .where(
            PerformedProcedureStep.status == COMPLETED,
            ExpectedInstance.series_instance_uid == series_uid,
        )
    ).one()
    return bool(listed) and listed == stored


def _commitment_covers(connection: Connection, series_uid: str) -> bool:
    commitments = connection.execute(
        select(ExpectedInstance.commitment_id)
        .distinct()
        .join(Instance, Instance.sop_instance_uid == ExpectedInstance.sop_instance_uid)
        .join(Series, Instance.series_id == Series.id)
        .where(
            Series.series_instance_uid == series_uid,
            ExpectedInstance.commitment_id.is_not(None),
        )
    ).scalars()
    return any(tally(connection, commitment_id=c).fulfilled for c in commitments if c)


def _images_in_acquisition_reached(
    connection: Connection, series_uid: str, completeness: SeriesCompletenessSettings
) -> bool:
    unset = connection.execute(
        select(func.count(Instance.id))
        .join(Series, Instance.series_id == Series.id)
        .where(Series.series_instance_uid == series_uid, Instance.images_in_acquisition.is_(None))
    ).scalar()
    if unset:
        return False  # the sender does not say how many: no count to reach
    judged = check_series_completeness(
        connection,
        series_uid,
        completeness.model_copy(update={"check_images_in_acquisition": True}),
    )
    return judged.instance_count > 0 and judged.complete


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _quiet_since(connection: Connection, series_uid: str, quiet_s: float, now: datetime) -> bool:
    latest = connection.execute(
        select(func.max(Instance.received_at))
        .join(Series, Instance.series_id == Series.id)
        .where(Series.series_instance_uid == series_uid)
    ).scalar()
    return latest is not None and _aware(latest) <= now - timedelta(seconds=quiet_s)


def series_complete_by(
    connection: Connection,
    series_uid: str,
    rule: RuleSettings,
    completeness: SeriesCompletenessSettings,
    now: datetime,
) -> str | None:
    """The signal that says the series is complete now, or None."""
    if _mpps_lists_all(connection, series_uid):
        return MPPS_SIGNAL
    if _commitment_covers(connection, series_uid):
        return COMMITMENT_SIGNAL
    if _images_in_acquisition_reached(connection, series_uid, completeness):
        return IMAGES_IN_ACQUISITION_SIGNAL
    if rule.series_quiet_period_s is not None and _quiet_since(
        connection, series_uid, rule.series_quiet_period_s, now
    ):
        return SERIES_QUIET_PERIOD_SIGNAL
    return None


@dataclass(frozen=True, slots=True)
class EarlierTrigger:
    series_instance_uid: str
    instance_count: int
    signal: str


def earlier_trigger(
    connection: Connection, study_id: int, rule_name: str, generation: int
) -> EarlierTrigger | None:
    row = connection.execute(
        select(
            SeriesTrigger.series_instance_uid, SeriesTrigger.instance_count, SeriesTrigger.signal
        ).where(
            SeriesTrigger.study_id == study_id,
            SeriesTrigger.rule_name == rule_name,
            SeriesTrigger.generation == generation,
        )
    ).first()
    return None if row is None else EarlierTrigger(str(row[0]), int(row[1]), str(row[2]))


def series_instance_count(connection: Connection, series_uid: str) -> int:
    count = connection.execute(
        select(Series.instance_count).where(Series.series_instance_uid == series_uid)
    ).scalar()
    return int(count or 0)
