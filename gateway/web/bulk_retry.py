"""Bulk retry (operators): every FAILED job of a rule and/or of studies received in a time
range, in two steps. The first counts and lists what matches; the confirmation carries
those job IDs back, and only the ones that still match and are still failed are retried,
each through the single-job retry (gateway/jobs/control.py), so each is its own audit
event (`job.requeued`, with the bulk criteria). A job failing between the two steps is not
retried behind the operator's back: it was not in the count they confirmed.

"Received" is the study's last instance received (the studies list's column), in UTC;
the range includes its start and excludes its end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Connection, Engine, func, select

from gateway.jobs.control import ImagesPurged, JobActionRefused, retry_job
from gateway.models import Job, JobState, Study

LIMIT = 1000  # jobs per confirmation; more are retried by confirming again
_FORMATS = ("%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class BulkRetryCriteria:
    rule: str = ""
    received_from: datetime | None = None
    received_to: datetime | None = None

    @property
    def empty(self) -> bool:
        return not (self.rule or self.received_from or self.received_to)

    def query_args(self) -> dict[str, str]:
        """As the form writes them (datetime-local, UTC)."""
        out = {"rule": self.rule} if self.rule else {}
        for name in ("received_from", "received_to"):
            value: datetime | None = getattr(self, name)
            if value is not None:
                out[name] = value.strftime("%Y-%m-%dT%H:%M")
        return out

    def audit_detail(self) -> dict[str, str]:
        return self.query_args()


@dataclass
class ParsedCriteria:
    criteria: BulkRetryCriteria
    problems: list[str]


def _moment(label: str, raw: str, problems: list[str]) -> datetime | None:
    text = raw.strip()
    if not text:
        return None
    for pattern in _FORMATS:
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    problems.append(
        f"{label}: expected a date and time as YYYY-MM-DDTHH:MM (UTC), found {text[:40]!r}"
    )
    return None


def parse_criteria(args: Mapping[str, str]) -> ParsedCriteria:
    problems: list[str] = []
    rule = args.get("rule", "").strip()
    if len(rule) > 64:
        problems.append(f"Rule: expected at most 64 characters, found {len(rule)}")
        rule = ""
    start = _moment("Received from", args.get("received_from", ""), problems)
    end = _moment("Received before", args.get("received_to", ""), problems)
    if start is not None and end is not None and start >= end:
        problems.append(
            f"Received: expected the start before the end, found {start:%Y-%m-%d %H:%M} "
            f"not before {end:%Y-%m-%d %H:%M}"
        )
    return ParsedCriteria(BulkRetryCriteria(rule, start, end), problems)


def _conditions(criteria: BulkRetryCriteria) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [Job.state == JobState.FAILED]
    if criteria.rule:
        conditions.append(Job.rule_name == criteria.rule)
    if criteria.received_from is not None:
        conditions.append(Study.last_received_at >= criteria.received_from)
    if criteria.received_to is not None:
        conditions.append(Study.last_received_at < criteria.received_to)
    return conditions


@dataclass(frozen=True)
class FailedJob:
    id: int
    study_instance_uid: str
    rule_name: str
    pipeline: str
    last_error: str | None
    finished_at: datetime | None


def failed_jobs(
    connection: Connection, criteria: BulkRetryCriteria, limit: int = LIMIT
) -> tuple[int, list[FailedJob]]:
    """How many failed jobs match, and the first `limit` of them (oldest first)."""
    if criteria.empty:
        raise ValueError("expected a rule or a received time range, found neither")
    conditions = _conditions(criteria)
    base = select(Job).join(Study, Job.study_id == Study.id).where(*conditions)
    total = connection.execute(select(func.count()).select_from(base.subquery())).scalar_one()
    rows = connection.execute(
        select(
            Job.id,
            Job.study_instance_uid,
            Job.rule_name,
            Job.pipeline,
            Job.last_error,
            Job.finished_at,
        )
        .join(Study, Job.study_id == Study.id)
        .where(*conditions)
        .order_by(Job.id)
        .limit(limit)
    ).all()
    return int(total), [FailedJob(*row) for row in rows]


@dataclass
class BulkRetryOutcome:
    retried: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    """Confirmed but no longer failed, or no longer matching."""
    refused: dict[int, str] = field(default_factory=dict)
    """Job ID -> why it cannot be retried (its images purged by retention)."""


def parse_job_ids(raw: str) -> list[int]:
    """The confirmed IDs as the form carries them (space-separated); anything else dropped."""
    return sorted({int(part) for part in raw.split() if part.isascii() and part.isdigit()})[:LIMIT]


def retry_confirmed(
    engine: Engine, criteria: BulkRetryCriteria, job_ids: Iterable[int], user: str
) -> BulkRetryOutcome:
    """Retry the confirmed jobs that still match `criteria` and are still failed, one audit
    event each."""
    confirmed = sorted(set(job_ids))
    outcome = BulkRetryOutcome()
    if criteria.empty or not confirmed:
        outcome.skipped = confirmed
        return outcome
    with engine.connect() as connection:
        still = set(
            connection.execute(
                select(Job.id)
                .join(Study, Job.study_id == Study.id)
                .where(Job.id.in_(confirmed), *_conditions(criteria))
            ).scalars()
        )
    bulk = criteria.audit_detail()
    for job_id in confirmed:
        if job_id not in still:
            outcome.skipped.append(job_id)
            continue
        try:
            retry_job(engine, job_id, user, bulk=bulk)
        except ImagesPurged as exc:
            outcome.refused[job_id] = str(exc)
        except JobActionRefused:  # retried or changed since the check above
            outcome.skipped.append(job_id)
        else:
            outcome.retried.append(job_id)
    return outcome
