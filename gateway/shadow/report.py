"""The evidence for a promotion: per rule and shadow pipeline version, how often the shadow
agreed with the primary (present/absent), the mean Dice of the segments and the score
differences; and the studies, those that disagree first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from gateway.models import Job, JobState, ShadowComparison


@dataclass(frozen=True)
class PairSummary:
    rule: str
    primary_pipeline: str
    primary_version: str | None
    shadow_pipeline: str
    shadow_version: str | None
    shadow_jobs: int
    shadow_failed: int
    compared: int
    agree: int
    disagree: int
    mean_dice: float | None
    mean_score_difference: float | None
    """Shadow minus primary, averaged: a shift of the score's level."""
    mean_abs_score_difference: float | None

    @property
    def agreement(self) -> float | None:
        known = self.agree + self.disagree
        return None if known == 0 else self.agree / known

    def evidence(self) -> dict[str, Any]:
        """What an admin saw before promoting (recorded in the audit event)."""
        return {
            "shadow_version": self.shadow_version,
            "shadow_jobs": self.shadow_jobs,
            "shadow_failed": self.shadow_failed,
            "compared": self.compared,
            "agreement": _round(self.agreement),
            "disagree": self.disagree,
            "mean_dice": _round(self.mean_dice),
            "mean_score_difference": _round(self.mean_score_difference),
        }


@dataclass(frozen=True)
class StudyComparison:
    study_instance_uid: str
    primary_job_id: int
    shadow_job_id: int
    primary_positive: bool | None
    shadow_positive: bool | None
    findings_agree: bool | None
    primary_score: float | None
    shadow_score: float | None
    score_difference: float | None
    primary_findings: int
    shadow_findings: int
    mean_dice: float | None
    segments: list[dict[str, Any]]
    problem: str | None
    computed_at: datetime


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _rows(connection: Connection, rule: str | None) -> list[Any]:
    shadow = Job.__table__.alias("shadow")
    primary = Job.__table__.alias("primary_job")
    query = (
        select(
            shadow.c.id,
            shadow.c.rule_name,
            shadow.c.pipeline,
            shadow.c.pipeline_version,
            shadow.c.state,
            primary.c.pipeline.label("primary_pipeline"),
            primary.c.pipeline_version.label("primary_version"),
            ShadowComparison.findings_agree,
            ShadowComparison.mean_dice,
            ShadowComparison.score_difference,
            ShadowComparison.id.label("comparison_id"),
        )
        .join(primary, primary.c.id == shadow.c.shadow_of)
        .outerjoin(ShadowComparison, ShadowComparison.shadow_job_id == shadow.c.id)
        .order_by(shadow.c.id)
    )
    if rule is not None:
        query = query.where(shadow.c.rule_name == rule)
    return list(connection.execute(query).all())


def pair_summaries(connection: Connection, rule: str | None = None) -> list[PairSummary]:
    """One summary per rule, primary pipeline version and shadow pipeline version, the most
    recently run first."""
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in _rows(connection, rule):
        key = (
            row.rule_name,
            row.primary_pipeline,
            row.primary_version,
            row.pipeline,
            row.pipeline_version,
        )
        groups.setdefault(key, []).append(row)
    summaries = []
    for key, rows in sorted(groups.items(), key=lambda item: -item[1][-1].id):
        compared = [r for r in rows if r.comparison_id is not None]
        dice = [r.mean_dice for r in compared if r.mean_dice is not None]
        differences = [r.score_difference for r in compared if r.score_difference is not None]
        summaries.append(
            PairSummary(
                *key,
                shadow_jobs=len(rows),
                shadow_failed=sum(1 for r in rows if r.state == JobState.FAILED),
                compared=len(compared),
                agree=sum(1 for r in compared if r.findings_agree is True),
                disagree=sum(1 for r in compared if r.findings_agree is False),
                mean_dice=_mean(dice),
                mean_score_difference=_mean(differences),
                mean_abs_score_difference=_mean([abs(d) for d in differences]),
            )
        )
    return summaries


def _disagreement_order(c: StudyComparison) -> tuple[int, float, float]:
    return (
        0 if c.findings_agree is False else 1,
        1.0 if c.mean_dice is None else c.mean_dice,
        -abs(c.score_difference or 0.0),
    )


def study_comparisons(
    connection: Connection,
    rule: str,
    shadow_pipeline: str,
    shadow_version: str | None = None,
    *,
    disagreements_only: bool = False,
    limit: int = 200,
) -> list[StudyComparison]:
    """The rule's compared studies for that shadow: findings that disagree first, then the
    lowest Dice, then the largest score difference."""
    shadow = Job.__table__.alias("shadow")
    query = (
        select(ShadowComparison)
        .join(shadow, shadow.c.id == ShadowComparison.shadow_job_id)
        .where(shadow.c.rule_name == rule, shadow.c.pipeline == shadow_pipeline)
    )
    if shadow_version is not None:
        query = query.where(shadow.c.pipeline_version == shadow_version)
    if disagreements_only:
        query = query.where(ShadowComparison.findings_agree.is_(False))
    found = [
        StudyComparison(
            study_instance_uid=c.study_instance_uid,
            primary_job_id=c.primary_job_id,
            shadow_job_id=c.shadow_job_id,
            primary_positive=c.primary_positive,
            shadow_positive=c.shadow_positive,
            findings_agree=c.findings_agree,
            primary_score=c.primary_score,
            shadow_score=c.shadow_score,
            score_difference=c.score_difference,
            primary_findings=c.primary_findings,
            shadow_findings=c.shadow_findings,
            mean_dice=c.mean_dice,
            segments=list(c.segments or []),
            problem=c.problem,
            computed_at=c.computed_at,
        )
        for c in connection.execute(query).all()
    ]
    found.sort(key=_disagreement_order)
    return found[:limit]
