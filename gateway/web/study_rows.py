"""What the studies list shows for one page of studies: modalities, and per job its rule,
pipeline, state, findings at a glance and turnaround, all read at query time (series,
instances, jobs; no column kept for it).

Turnaround: from the last instance received before the job was made (the instances of its
study generation) to the job's results delivered; none until delivered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from gateway.models import Instance, Job, JobState, Series, Study
from gateway.pipelines.registry import PipelineRegistry
from gateway.web.findings_match import FindingsLine, read_findings


@dataclass(frozen=True)
class JobLine:
    id: int
    rule: str
    pipeline: str
    state: JobState
    findings: FindingsLine | None
    turnaround_s: float | None


@dataclass
class StudyLine:
    study: Study
    modalities: list[str] = field(default_factory=list)
    jobs: list[JobLine] = field(default_factory=list)
    other_jobs: int = 0
    """Jobs of the study that the search's job fields did not match (not listed)."""


def classification_thresholds(registry: PipelineRegistry) -> dict[str, float]:
    """Per registered pipeline with a classification, its threshold (Present at or above)."""
    return {
        p.name: p.description.classification.threshold
        for p in registry
        if p.description.classification is not None
    }


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite gives naive UTC


def turnaround_s(last_received: datetime | None, delivered: datetime | None) -> float | None:
    if last_received is None or delivered is None:
        return None
    return max(0.0, (_aware(delivered) - _aware(last_received)).total_seconds())


def format_duration(seconds: float | None) -> str:
    """'8.4 s', '3 min 05 s', '2 h 07 min': short, for a table cell."""
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


def study_lines(
    session: Session,
    studies: Sequence[Study],
    thresholds: Mapping[str, float],
    job_filter: Sequence[ColumnElement[bool]] = (),
) -> list[StudyLine]:
    """One line per study, in the given order; with `job_filter`, only the jobs it matches
    are listed (the others counted)."""
    lines = {s.id: StudyLine(s) for s in studies}
    if not lines:
        return []
    uids = [s.study_instance_uid for s in studies]  # jobs are indexed by it, not by study_id
    for study_id, modality in session.execute(
        select(Series.study_id, Series.modality)
        .where(Series.study_id.in_(lines), Series.modality.is_not(None))
        .distinct()
        .order_by(Series.modality)
    ):
        lines[study_id].modalities.append(modality)
    last_instance = (
        select(func.max(Instance.received_at))
        .join(Series, Instance.series_id == Series.id)
        .where(Series.study_id == Job.study_id, Instance.received_at <= Job.created_at)
        .scalar_subquery()
    )
    matched: set[int] | None = None
    if job_filter:
        matched = set(
            session.execute(
                select(Job.id).where(Job.study_instance_uid.in_(uids), *job_filter)
            ).scalars()
        )
    for row in session.execute(
        select(
            Job.id,
            Job.study_id,
            Job.rule_name,
            Job.pipeline,
            Job.state,
            Job.summary,
            Job.delivered_at,
            last_instance.label("last_received"),
        )
        .where(Job.study_instance_uid.in_(uids))
        .order_by(Job.id.desc())
    ):
        line = lines[row.study_id]
        if matched is not None and row.id not in matched:
            line.other_jobs += 1
            continue
        line.jobs.append(
            JobLine(
                id=row.id,
                rule=row.rule_name,
                pipeline=row.pipeline,
                state=row.state,
                findings=read_findings(row.summary, thresholds.get(row.pipeline)),
                turnaround_s=turnaround_s(
                    row.last_received or line.study.last_received_at, row.delivered_at
                ),
            )
        )
    return [lines[s.id] for s in studies]
