"""Priors: a rule may ask for the most recent prior study of the same patient (same
modality, same body part, within N years). The router records the request with the job;
the job is not sent to the workers while it waits (at most the rule's `wait_s`). A puller
reads the Patient ID from a stored instance of the study (never logged, never in a message
or audit event), finds the prior on the source (C-FIND or QIDO-RS), fetches it, and records
which prior the job uses, or why none.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial

import pydicom
from sqlalchemy import Connection, Engine, exists, insert, select, update
from sqlalchemy.sql.elements import ColumnElement

from gateway.audit import AuditKind, Outcome, record, utcnow
from gateway.database import writer_queue
from gateway.models import Instance, Job, JobPrior, Series, Study
from gateway.pull.events import pull_audit_row, retry_auditor
from gateway.pull.fetch import StudyFetcher
from gateway.pull.ledger import mark_failed, mark_pulled, start_prior_pull
from gateway.pull.matches import StudyMatch, StudyQuery
from gateway.pull.retry import GaveUp, with_retries
from gateway.pull.source import SourceClient, source_client
from gateway.routing.config import PriorRequirement
from gateway.routing.seed import load_rules
from gateway.settings import GatewaySettings

LOGGER = logging.getLogger(__name__)


class PriorState:
    WAITING = "waiting"
    FOUND = "found"  # fetched; prior_study_instance_uid says which
    NONE = "none"  # the source has no such prior
    TIMED_OUT = "timed_out"  # the wait ended first: the job went on without it
    FAILED = "failed"  # the source could not be queried or the prior not fetched
    SKIPPED = "skipped"  # no source archive configured


def request_prior(
    connection: Connection,
    settings: GatewaySettings,
    job_id: int,
    study_uid: str,
    requirement: PriorRequirement,
    now: datetime,
) -> None:
    """In the router's transaction, beside the job it made."""
    waiting = settings.pull.source is not None and requirement.wait_s > 0
    reason = None
    if settings.pull.source is None:
        reason = "no source archive configured (pull.source): the job runs without a prior"
    elif requirement.wait_s <= 0:
        reason = "the rule's prior wait_s is 0: the job runs without a prior"
    connection.execute(
        insert(JobPrior).values(
            job_id=job_id,
            study_instance_uid=study_uid,
            state=PriorState.WAITING if waiting else PriorState.SKIPPED,
            reason=reason,
            deadline_at=now + timedelta(seconds=requirement.wait_s),
            created_at=now,
            finished_at=None if waiting else now,
        )
    )
    record(
        connection,
        pull_audit_row(
            AuditKind.PRIOR_REQUESTED,
            actor="router",
            study_instance_uid=study_uid,
            detail={
                "job": job_id,
                "within_years": requirement.within_years,
                "same_body_part": requirement.same_body_part,
                "wait_s": requirement.wait_s,
                **({"skipped": reason} if reason else {}),
            },
            occurred_at=now,
        ),
    )


def waiting_for_prior() -> ColumnElement[bool]:
    """SQL for the dispatcher: the job still waits for its prior."""
    return exists().where(JobPrior.job_id == Job.id, JobPrior.state == PriorState.WAITING)


def _finish(
    engine: Engine,
    prior_id: int,
    state: str,
    *,
    prior_uid: str | None = None,
    reason: str | None = None,
    only_if_waiting: bool = True,
) -> bool:
    """Record the outcome (if the wait is still on); False if it ended meanwhile."""
    kinds = {
        PriorState.FOUND: AuditKind.PRIOR_FOUND,
        PriorState.NONE: AuditKind.PRIOR_NONE,
        PriorState.TIMED_OUT: AuditKind.PRIOR_TIMED_OUT,
        PriorState.FAILED: AuditKind.PRIOR_FAILED,
    }
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        statement = update(JobPrior).where(JobPrior.id == prior_id)
        if only_if_waiting:
            statement = statement.where(JobPrior.state == PriorState.WAITING)
        changed = connection.execute(
            statement.values(
                state=state, prior_study_instance_uid=prior_uid, reason=reason, finished_at=now
            )
        ).rowcount
        if changed != 1:
            return False
        row = connection.execute(
            select(JobPrior.job_id, JobPrior.study_instance_uid).where(JobPrior.id == prior_id)
        ).one()
        record(
            connection,
            pull_audit_row(
                kinds[state],
                Outcome.SUCCESS
                if state in (PriorState.FOUND, PriorState.NONE)
                else Outcome.FAILURE,
                study_instance_uid=row.study_instance_uid,
                detail={
                    "job": row.job_id,
                    **({"prior": prior_uid} if prior_uid else {}),
                    **({"reason": reason} if reason else {}),
                },
                occurred_at=now,
            ),
        )
    return True


def release_overdue(engine: Engine, now: datetime | None = None) -> int:
    """End every wait past its deadline (timed_out, with the reason): those jobs go on
    without a prior. A read first, so an idle router writes nothing."""
    now = now or utcnow()
    with engine.connect() as connection:
        overdue = connection.execute(
            select(JobPrior.id, JobPrior.deadline_at, JobPrior.created_at).where(
                JobPrior.state == PriorState.WAITING, JobPrior.deadline_at <= now
            )
        ).all()
    released = 0
    for prior_id, deadline_at, created_at in overdue:
        waited = (deadline_at - created_at).total_seconds()
        if _finish(
            engine,
            prior_id,
            PriorState.TIMED_OUT,
            reason=f"no prior within the rule's wait of {waited:g} s: the job went on without one",
        ):
            released += 1
    return released


@dataclass(frozen=True)
class PriorClaim:
    prior_id: int
    job_id: int
    study_instance_uid: str
    series_instance_uid: str
    rule_name: str


def claim_waiting(engine: Engine, lease_s: float) -> PriorClaim | None:
    """A waiting prior nobody works on (or whose puller's lease lapsed)."""
    now = utcnow()
    stale = now - timedelta(seconds=lease_s)
    with writer_queue(engine), engine.begin() as connection:
        row = connection.execute(
            select(
                JobPrior.id,
                JobPrior.claimed_at,
                Job.id.label("job_id"),
                Job.study_instance_uid,
                Job.series_instance_uid,
                Job.rule_name,
            )
            .join(Job, Job.id == JobPrior.job_id)
            .where(
                JobPrior.state == PriorState.WAITING,
                (JobPrior.claimed_at.is_(None)) | (JobPrior.claimed_at < stale),
            )
            .order_by(JobPrior.id)
            .limit(1)
        ).first()
        if row is None:
            return None
        claimed = connection.execute(
            update(JobPrior)
            .where(JobPrior.id == row.id, JobPrior.state == PriorState.WAITING)
            .where(
                JobPrior.claimed_at.is_(None)
                if row.claimed_at is None
                else JobPrior.claimed_at == row.claimed_at
            )
            .values(claimed_at=now)
        ).rowcount
    if claimed != 1:
        return None
    return PriorClaim(
        row.id, row.job_id, row.study_instance_uid, row.series_instance_uid, row.rule_name
    )


@dataclass(frozen=True)
class _Current:
    """What the prior must match, from the follow-up study (the patient ID stays local)."""

    study_date: date | None
    modality: str | None
    body_part: str | None
    file_path: str | None


def _current(engine: Engine, claim: PriorClaim) -> _Current:
    with engine.connect() as connection:
        row = connection.execute(
            select(Study.study_date, Series.modality, Series.body_part_examined, Series.id)
            .join(Study, Series.study_id == Study.id)
            .where(Series.series_instance_uid == claim.series_instance_uid)
        ).first()
        path = None
        if row is not None:
            path = connection.execute(
                select(Instance.file_path).where(Instance.series_id == row.id).limit(1)
            ).scalar()
    if row is None:
        return _Current(None, None, None, None)
    return _Current(_parse_da(row.study_date), row.modality, row.body_part_examined, path)


def _parse_da(value: str | None) -> date | None:
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:8])) if value else None
    except (TypeError, ValueError):
        return None


def read_patient_id(path: str) -> str | None:
    """The Patient ID of a stored instance; kept in memory only for the query."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception:
        return None
    value = str(ds.get("PatientID") or "").strip()
    return value or None


class PriorResolver:
    """Finds and fetches the prior of one claimed job, and records the outcome."""

    def __init__(
        self, settings: GatewaySettings, engine: Engine, stop: threading.Event | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.stop = stop

    def _requirement(self, rule_name: str) -> PriorRequirement | None:
        with self.engine.connect() as connection:
            rules = {r.name: r for r in load_rules(connection)}
        rule = rules.get(rule_name)
        return None if rule is None else rule.prior

    def resolve(self, claim: PriorClaim) -> str:
        """The state recorded (or the one found, if the wait ended meanwhile)."""
        requirement = self._requirement(claim.rule_name)
        if requirement is None:
            return self._end(claim, PriorState.NONE, reason="the job's rule asks for no prior")
        current = _current(self.engine, claim)
        if current.file_path is None or current.modality is None:
            return self._end(
                claim, PriorState.NONE, reason="the job's series has no stored instance or modality"
            )
        patient_id = read_patient_id(str(self.settings.spool_dir / current.file_path))
        if patient_id is None:
            return self._end(
                claim, PriorState.NONE, reason="the study has no Patient ID to search by"
            )
        try:
            client = source_client(self.settings, self.engine)
            prior = self._find(client, claim, current, patient_id, requirement)
        except GaveUp as exc:
            return self._end(claim, PriorState.FAILED, reason=f"finding the prior: {exc.reason}")
        except Exception as exc:
            return self._end(claim, PriorState.FAILED, reason=f"{type(exc).__name__}: {exc}")
        if prior is None:
            scope = f"modality {current.modality}"
            if requirement.same_body_part:
                scope += f", body part {current.body_part or '(none)'}"
            return self._end(
                claim,
                PriorState.NONE,
                reason=f"no prior study ({scope}) within {requirement.within_years:g} years "
                "on the source",
            )
        return self._fetch(client, claim, prior)

    def _find(
        self,
        client: SourceClient,
        claim: PriorClaim,
        current: _Current,
        patient_id: str,
        requirement: PriorRequirement,
    ) -> StudyMatch | None:
        pull = self.settings.pull
        until = current.study_date or utcnow().date()
        since = until - timedelta(days=round(requirement.within_years * 365.25))
        query = StudyQuery(
            patient_id=patient_id,
            date_from=since.strftime("%Y%m%d"),
            date_to=until.strftime("%Y%m%d"),
            modality=current.modality,
        )
        audit = retry_auditor(
            self.engine,
            pull.max_attempts,
            client.transport,
            step="find prior",
            study_instance_uid=claim.study_instance_uid,
        )
        studies, _ = with_retries(
            lambda: client.query.studies(query), pull, stop=self.stop, on_retry=audit
        )
        candidates = sorted(
            (s for s in studies if s.study_instance_uid != claim.study_instance_uid),
            key=lambda s: s.study_date or "",
            reverse=True,
        )
        wanted_modality = current.modality.casefold() if current.modality else None
        wanted_part = (current.body_part or "").strip().casefold()
        last_day = until.strftime("%Y%m%d")
        for candidate in candidates:
            if candidate.study_date and candidate.study_date > last_day:
                continue  # a later study is no prior
            if not requirement.same_body_part:
                return candidate  # the query matched the modality already
            series, _ = with_retries(
                partial(client.query.series, candidate.study_instance_uid),
                pull,
                stop=self.stop,
                on_retry=audit,
            )
            if any(
                (s.modality or "").casefold() == wanted_modality
                and (s.body_part_examined or "").strip().casefold() == wanted_part
                for s in series
            ):
                return candidate
        return None

    def _fetch(self, client: SourceClient, claim: PriorClaim, prior: StudyMatch) -> str:
        uid = prior.study_instance_uid
        row_id = start_prior_pull(self.engine, uid)
        try:
            fetched = StudyFetcher(self.settings, self.engine, client, self.stop).fetch(uid)
        except GaveUp as exc:
            mark_failed(
                self.engine,
                row_id,
                reason=exc.reason,
                attempts=exc.attempts,
                transport=client.transport,
            )
            return self._end(claim, PriorState.FAILED, reason=f"fetching prior {uid}: {exc.reason}")
        mark_pulled(
            self.engine,
            row_id,
            listed=fetched.listed,
            attempts=fetched.attempts,
            retrieved=fetched.retrieved,
            transport=client.transport,
        )
        return self._end(claim, PriorState.FOUND, prior_uid=uid)

    def _end(
        self,
        claim: PriorClaim,
        state: str,
        *,
        prior_uid: str | None = None,
        reason: str | None = None,
    ) -> str:
        if not _finish(self.engine, claim.prior_id, state, prior_uid=prior_uid, reason=reason):
            LOGGER.info("job %d: the prior wait ended before it was %s", claim.job_id, state)
        else:
            LOGGER.info("job %d: prior %s%s", claim.job_id, state, f" ({reason})" if reason else "")
        return state
