"""Job rows as study records of a pipeline version: the jobs whose models ran (inferred) or
whose pipeline failed after it started. Jobs failed before they started (an incomplete
series, a series the pipeline cannot take at routing) and cancelled ones say nothing about
the model and are left out; shadow jobs count for their own pipeline version."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select

from gateway.models import Job, JobState
from gateway.monitoring.outcome import study_outcome
from gateway.monitoring.statistics import StudyRecord
from gateway.pipelines.description import PipelineDescription

LATENCY_STAGES = ("load_preprocess", "inference", "postprocess")


@dataclass(frozen=True, order=True)
class VersionKey:
    """A pipeline as it ran: its name, its file's version and its models' versions."""

    pipeline: str
    version: str | None
    """The pipeline file's version (None for jobs made before the gateway recorded it)."""
    model_key: str

    @property
    def label(self) -> str:
        return f"{self.pipeline} {self.version or '?'} ({self.model_key})"


def _ran() -> ColumnElement[bool]:
    return or_(
        Job.inferred_at.is_not(None),
        and_(Job.state == JobState.FAILED, Job.started_at.is_not(None)),
    )


def _of(key: VersionKey) -> ColumnElement[bool]:
    version = (
        Job.pipeline_version.is_(None)
        if key.version is None
        else (Job.pipeline_version == key.version)
    )
    return and_(Job.pipeline == key.pipeline, Job.model_key == key.model_key, version)


def version_keys(connection: Connection) -> list[tuple[VersionKey, int, datetime]]:
    """Every pipeline version that ran, with its study count and its latest job's time,
    by pipeline, latest version first."""
    rows = connection.execute(
        select(Job.pipeline, Job.pipeline_version, Job.model_key, func.count(), func.max(Job.id))
        .where(_ran())
        .group_by(Job.pipeline, Job.pipeline_version, Job.model_key)
    ).all()
    latest = {
        row.id: _aware(row.created_at)
        for row in connection.execute(
            select(Job.id, Job.created_at).where(Job.id.in_([r[4] for r in rows]))
        )
    }
    found = [(VersionKey(r[0], r[1], r[2]), int(r[3]), latest[r[4]]) for r in rows]
    found.sort(key=lambda item: (item[0].pipeline, -item[2].timestamp()))
    return found


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _latency(stage_seconds: dict[str, Any] | None) -> float | None:
    if not stage_seconds or not any(s in stage_seconds for s in LATENCY_STAGES):
        return None
    return float(sum(float(stage_seconds.get(s) or 0.0) for s in LATENCY_STAGES))


def _records(
    connection: Connection,
    key: VersionKey,
    description: PipelineDescription | None,
    *conditions: ColumnElement[bool],
    limit: int | None = None,
) -> list[StudyRecord]:
    query = (
        select(
            Job.id,
            Job.created_at,
            Job.state,
            Job.inferred_at,
            Job.summary,
            Job.stage_seconds,
        )
        .where(_ran(), _of(key), *conditions)
        .order_by(Job.created_at, Job.id)
    )
    if limit is not None:
        query = query.limit(limit)
    records = []
    for row in connection.execute(query):
        failed = row.inferred_at is None  # _ran(): failed after it started
        records.append(
            StudyRecord(
                job_id=row.id,
                day=_aware(row.created_at).date(),
                failed=failed,
                outcome=None if failed else study_outcome(row.summary, description),
                latency_s=None if failed else _latency(row.stage_seconds),
            )
        )
    return records


def baseline_records(
    connection: Connection, key: VersionKey, description: PipelineDescription | None, n: int
) -> list[StudyRecord]:
    """The version's first n studies (fewer while it has not run n yet)."""
    return _records(connection, key, description, limit=n)


def records_since(
    connection: Connection,
    key: VersionKey,
    description: PipelineDescription | None,
    since: datetime,
) -> list[StudyRecord]:
    return _records(connection, key, description, Job.created_at >= since)
