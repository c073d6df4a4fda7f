"""Shadow comparisons in the database: which pairs (primary job, shadow job) a job belongs
to, and the comparison of a pair, kept once per shadow job with its audit event."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, insert, or_, select

from gateway.audit import AuditKind, audit_row, record
from gateway.models import Job, ShadowComparison
from gateway.shadow.compare import Comparison


@dataclass(frozen=True)
class ShadowPair:
    primary_job_id: int
    shadow_job_id: int
    study_instance_uid: str


def pairs_ready(connection: Connection, job_id: int) -> list[ShadowPair]:
    """The pairs the job is part of (as primary or shadow) whose runs have both inferred
    and which have no comparison yet."""
    shadow = Job.__table__.alias("shadow")
    primary = Job.__table__.alias("primary_job")
    rows = connection.execute(
        select(primary.c.id, shadow.c.id, shadow.c.study_instance_uid)
        .join(primary, primary.c.id == shadow.c.shadow_of)
        .where(
            or_(shadow.c.id == job_id, primary.c.id == job_id),
            primary.c.inferred_at.is_not(None),
            shadow.c.inferred_at.is_not(None),
            ~select(ShadowComparison.id)
            .where(ShadowComparison.shadow_job_id == shadow.c.id)
            .exists(),
        )
    ).all()
    return [ShadowPair(int(p), int(s), str(uid)) for p, s, uid in rows]


def save_comparison(
    connection: Connection, pair: ShadowPair, comparison: Comparison, now: datetime
) -> None:
    """Keep the pair's comparison (replacing an earlier one) with a `shadow.compared` event,
    in the caller's transaction."""
    connection.execute(
        delete(ShadowComparison).where(ShadowComparison.shadow_job_id == pair.shadow_job_id)
    )
    connection.execute(
        insert(ShadowComparison).values(
            shadow_job_id=pair.shadow_job_id,
            primary_job_id=pair.primary_job_id,
            study_instance_uid=pair.study_instance_uid,
            primary_positive=comparison.primary.positive,
            shadow_positive=comparison.shadow.positive,
            findings_agree=comparison.findings_agree,
            primary_score=comparison.primary.score,
            shadow_score=comparison.shadow.score,
            score_difference=comparison.score_difference,
            primary_findings=comparison.primary.findings,
            shadow_findings=comparison.shadow.findings,
            mean_dice=comparison.mean_dice,
            segments=[asdict(m) for m in comparison.segments],
            problem=comparison.problem,
            computed_at=now,
        )
    )
    record(
        connection,
        audit_row(
            AuditKind.SHADOW_COMPARED,
            actor="worker",
            study_instance_uid=pair.study_instance_uid,
            detail={
                "job": pair.shadow_job_id,
                "shadow_of": pair.primary_job_id,
                "findings_agree": comparison.findings_agree,
                "score_difference": comparison.score_difference,
                "mean_dice": comparison.mean_dice,
                **({"problem": comparison.problem} if comparison.problem else {}),
            },
            occurred_at=now,
        ),
    )
