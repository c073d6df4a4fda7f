"""The retention pass: decide, then remove, study by study.

Order, for crash safety: a transaction first marks the study purged (`spool_purged_at`,
`spool_purge_through_id` = its highest instance id, `spool_purge_pending`) with one audit
event; only after that commits are the files removed, and then the pending flag is cleared.
A crash in between leaves a pending study whose files the next pass removes: every file is
still accounted for (named by a row of a study marked pending), and nothing is lost that
was still needed, since the decision had been made under the full rule.

The marking UPDATE re-checks the whole rule (gateway/retention/policy.py) in the database,
on a study row locked first (PostgreSQL; SQLite has one writer at a time anyway): a late
instance committed before it makes it change nothing, and one committed after it has a
higher id than `spool_purge_through_id`, so its file is never removed. That instance reopens
the study as any late instance does; the study becomes a candidate again (for its new
instances) once it qualifies on its own.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import ColumnElement, Connection, Engine, func, select, update

from gateway.audit import AuditKind, audit_row, record, utcnow
from gateway.database import writer_queue
from gateway.models import TERMINAL_JOB_STATES, Delivery, Instance, Job, Series, Study
from gateway.retention.policy import (
    KeepReason,
    has_unpurged_instances,
    keep_conditions,
    old_enough,
    purgeable,
)
from gateway.settings import GatewaySettings

LOGGER = logging.getLogger(__name__)

RECENT = "recent"  # a kept reason of its own: last received within the period


@dataclass(frozen=True)
class PurgeCandidate:
    study_id: int
    study_instance_uid: str
    last_received_at: datetime
    instances: int  # whose files would go
    bytes: int


@dataclass
class RetentionPlan:
    """What a pass would do now: the studies to purge, and why the others stay."""

    days: int
    cutoff: datetime
    to_purge: list[PurgeCandidate] = field(default_factory=list)
    kept: Counter[str] = field(default_factory=Counter)  # reason -> studies
    already_purged: int = 0
    pending: int = 0  # decided earlier, files not all removed yet (a crash)


@dataclass
class RetentionReport:
    plan: RetentionPlan
    purged: list[str] = field(default_factory=list)  # Study Instance UIDs
    changed_meanwhile: int = 0  # qualified when planned, not when decided
    files_removed: int = 0
    files_missing: int = 0  # already gone (a pass that crashed, or the disk)
    bytes_removed: int = 0
    derived_removed: int = 0  # results (SEG, SR, ...) and job findings: PHI as well
    errors: int = 0


def _instances_of(study_id: int) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return Series.study_id == study_id, Instance.series_id == Series.id


class RetentionPass:
    def __init__(
        self,
        settings: GatewaySettings,
        engine: Engine,
        *,
        days: int | None = None,
        actor: str = "retention",
    ) -> None:
        chosen = settings.storage.retention_days if days is None else days
        if chosen is None:
            raise ValueError("expected a retention period in days, found none (retention is off)")
        self.days = chosen
        self.spool = settings.spool_dir
        self.results_dir = settings.results_dir
        self.jobs_dir = settings.jobs_dir
        self.fsync = settings.storage.fsync
        self.engine = engine
        self.actor = actor
        self._writers = writer_queue(engine)

    # --- what would be done -------------------------------------------------------------

    def plan(self, now: datetime | None = None) -> RetentionPlan:
        now = now or utcnow()
        cutoff = now - timedelta(days=self.days)
        plan = RetentionPlan(self.days, cutoff)
        reasons = keep_conditions(cutoff)
        with self.engine.connect() as connection:
            plan.kept[RECENT] = connection.execute(
                select(func.count()).select_from(Study).where(~old_enough(cutoff))
            ).scalar_one()
            plan.already_purged = connection.execute(
                select(func.count())
                .select_from(Study)
                .where(old_enough(cutoff), ~has_unpurged_instances())
            ).scalar_one()
            plan.pending = connection.execute(
                select(func.count()).select_from(Study).where(Study.spool_purge_pending)
            ).scalar_one()
            rows = connection.execute(
                select(
                    Study.id,
                    Study.study_instance_uid,
                    Study.last_received_at,
                    Study.spool_purge_through_id,
                    *(condition.label(reason.value) for reason, condition in reasons),
                )
                .where(old_enough(cutoff), has_unpurged_instances())
                .order_by(Study.last_received_at, Study.id)
            ).all()
            for row in rows:
                held = [r for r, _ in reasons if getattr(row, r.value)]
                if held:
                    plan.kept[held[0].value] += 1
                    continue
                count, size = self._unpurged(connection, row.id, row.spool_purge_through_id)
                plan.to_purge.append(
                    PurgeCandidate(
                        row.id, row.study_instance_uid, row.last_received_at, count, size
                    )
                )
        return plan

    @staticmethod
    def _unpurged(
        connection: Connection, study_id: int, after_id: int | None, through_id: int | None = None
    ) -> tuple[int, int]:
        query = select(func.count(Instance.id), func.coalesce(func.sum(Instance.size_bytes), 0))
        query = query.where(*_instances_of(study_id))
        if after_id is not None:
            query = query.where(Instance.id > after_id)
        if through_id is not None:
            query = query.where(Instance.id <= through_id)
        count, size = connection.execute(query).one()
        return int(count), int(size)

    # --- doing it -----------------------------------------------------------------------

    def run(
        self, now: datetime | None = None, stop: threading.Event | None = None
    ) -> RetentionReport:
        """Finish purges a crash left pending, then purge what the plan names."""
        report = RetentionReport(self.plan(now))
        self.finish_pending(report)
        for candidate in report.plan.to_purge:
            if stop is not None and stop.is_set():
                break
            through_id = self.decide(candidate.study_id, report.plan.cutoff, now)
            if through_id is None:
                report.changed_meanwhile += 1
                continue
            report.purged.append(candidate.study_instance_uid)
            self.remove_files(candidate.study_id, through_id, report)
        if report.purged or report.errors:
            LOGGER.info(
                "retention (%d days): purged %d studies, %d files (%d bytes), %d errors",
                self.days,
                len(report.purged),
                report.files_removed,
                report.bytes_removed,
                report.errors,
            )
        return report

    def decide(self, study_id: int, cutoff: datetime, now: datetime | None = None) -> int | None:
        """Mark one study purged if the whole rule still holds; its audit event in the same
        transaction. Returns the highest instance id whose file is to go, or None."""
        now = now or utcnow()
        highest = (
            select(func.max(Instance.id))
            .where(Instance.series_id == Series.id, Series.study_id == Study.id)
            .scalar_subquery()
        )
        with self._writers, self.engine.begin() as connection:
            # The row lock (PostgreSQL) holds back a late instance of this study until the
            # decision commits; SQLite's BEGIN IMMEDIATE already excludes every writer.
            previous = connection.execute(
                select(Study.study_instance_uid, Study.spool_purge_through_id)
                .where(Study.id == study_id)
                .with_for_update()
            ).one_or_none()
            if previous is None:
                return None
            through_id = connection.execute(
                update(Study)
                .where(Study.id == study_id, purgeable(cutoff))
                .values(
                    spool_purged_at=now,
                    spool_purge_through_id=highest,
                    spool_purge_pending=True,
                )
                .returning(Study.spool_purge_through_id)
            ).scalar_one_or_none()
            if through_id is None:
                return None
            count, size = self._unpurged(
                connection, study_id, previous.spool_purge_through_id, through_id
            )
            series = connection.execute(
                select(func.count()).select_from(Series).where(Series.study_id == study_id)
            ).scalar_one()
            jobs = connection.execute(
                select(func.count()).select_from(Job).where(Job.study_id == study_id)
            ).scalar_one()
            deliveries = connection.execute(
                select(func.count())
                .select_from(Delivery)
                .where(Delivery.study_instance_uid == previous.study_instance_uid)
            ).scalar_one()
            record(
                connection,
                audit_row(
                    AuditKind.STUDY_PURGED,
                    actor=self.actor,
                    study_instance_uid=previous.study_instance_uid,
                    occurred_at=now,
                    detail={  # counts and the rule, no PHI
                        "retention_days": self.days,
                        "instances": count,
                        "bytes": size,
                        "series": series,
                        "jobs": jobs,
                        "deliveries": deliveries,
                        "again": previous.spool_purge_through_id is not None,
                    },
                ),
            )
        return int(through_id)

    def finish_pending(self, report: RetentionReport) -> None:
        with self.engine.connect() as connection:
            pending = connection.execute(
                select(Study.id, Study.spool_purge_through_id).where(Study.spool_purge_pending)
            ).all()
        for study_id, through_id in pending:
            LOGGER.warning("retention: finishing the purge of study row %d (pending)", study_id)
            self.remove_files(study_id, through_id, report)

    def remove_files(self, study_id: int, through_id: int, report: RetentionReport) -> None:
        """Remove the files of the study's instances up to `through_id`; clear the pending
        flag only once every one is gone and the removals are durable."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Instance.file_path, Instance.size_bytes).where(
                    *_instances_of(study_id), Instance.id <= through_id
                )
            ).all()
        directories: set[Path] = set()
        errors = 0
        for relative, size in rows:
            path = self.spool / relative
            try:
                path.unlink()
            except FileNotFoundError:
                report.files_missing += 1
                continue
            except OSError as exc:
                errors += 1
                LOGGER.error("retention: could not remove spool file %s: %s", relative, exc)
                continue
            report.files_removed += 1
            report.bytes_removed += int(size)
            directories.add(path.parent)
        errors += self.remove_derived(study_id, report, directories)
        # Empty folders stay: a late instance of the study may be writing into one.
        if self.fsync:
            for directory in directories:
                _sync_dir(directory)
        report.errors += errors
        if errors:
            return  # stays pending: the next pass tries again
        with self._writers, self.engine.begin() as connection:
            connection.execute(
                update(Study)
                .where(Study.id == study_id, Study.spool_purge_through_id == through_id)
                .values(spool_purge_pending=False)
            )

    def remove_derived(self, study_id: int, report: RetentionReport, directories: set[Path]) -> int:
        """Remove what the study's ended jobs derived from its images: their results (SEG,
        SR, ...: the patient's header and the findings) and their saved findings. Only jobs
        made before the decision: a late instance may have started a new generation, whose
        results are its own. Returns the number of errors."""
        with self.engine.connect() as connection:
            purged_at = connection.execute(
                select(Study.spool_purged_at).where(Study.id == study_id)
            ).scalar_one()
            jobs = connection.execute(
                select(Job.id, Job.summary).where(
                    Job.study_id == study_id,
                    Job.state.in_(TERMINAL_JOB_STATES),
                    Job.created_at <= purged_at,
                )
            ).all()
        paths: list[Path] = []
        for job_id, summary in jobs:
            for result in (summary or {}).get("results", []):
                paths.append(self.results_dir / result["relative_path"])
            findings_dir = self.jobs_dir / str(job_id)
            if findings_dir.is_dir():
                paths += [p for p in findings_dir.iterdir() if p.is_file()]
        errors = 0
        for path in paths:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                errors += 1
                LOGGER.error("retention: could not remove %s: %s", path.name, exc)
                continue
            report.derived_removed += 1
            directories.add(path.parent)
        return errors


def _sync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["RECENT", "KeepReason", "PurgeCandidate", "RetentionPass", "RetentionPlan"]
