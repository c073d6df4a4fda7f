"""Complete studies to jobs (routing rules, series selection), then jobs to the broker.

A job row is committed first; the task is sent after the commit, and `enqueued_at` marks it
sent. A crash in between leaves a queued job with no `enqueued_at`, which the next pass
sends; a crash after sending but before marking sends it twice, which the idempotent task
absorbs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import timedelta

from sqlalchemy import Connection, Engine, and_, or_, select, update

from gateway.audit import AuditKind, Outcome, audit_row, record, utcnow
from gateway.completion.series_trigger import (
    earlier_trigger,
    series_complete_by,
    series_instance_count,
)
from gateway.completion.signals import OPEN_STATES
from gateway.database import insert_ignoring_duplicates, writer_queue
from gateway.delivery.registry import destination_names
from gateway.jobs.sweeper import StuckJobSweeper
from gateway.models import Job, JobState, SeriesTrigger, Study, StudyState
from gateway.pull.gate import pull_unfinished, pulled_only_as_prior
from gateway.pull.priors import release_overdue, request_prior, waiting_for_prior
from gateway.routing.completeness import check_series_completeness
from gateway.routing.config import RuleSettings
from gateway.routing.holds import end_hold, hold_study
from gateway.routing.rules import route_study
from gateway.routing.seed import load_rules, seed_rules
from gateway.routing.selection import select_series
from gateway.settings import GatewaySettings
from gateway.shadow.jobs import queue_shadow_job

LOGGER = logging.getLogger(__name__)

SendJob = Callable[[int, str], None]
"""send(job_id, priority): hand a job to the broker."""


class StudyRouter:
    def __init__(self, settings: GatewaySettings, engine: Engine, send: SendJob) -> None:
        self.settings = settings
        self.engine = engine
        self.send = send
        self._writers = writer_queue(engine)
        self.sweeper = StuckJobSweeper(settings, engine)
        self.registry = settings.pipeline_registry()

    def seed(self) -> int:
        with self._writers, self.engine.begin() as connection:
            return seed_rules(connection, self.settings.routing.rules)

    def route_complete_studies(self) -> list[int]:
        """Route every complete study whose current generation was not routed yet; returns
        the IDs of the jobs made."""
        made: list[int] = []
        with self._writers, self.engine.begin() as connection:
            studies = connection.execute(
                select(Study.id, Study.study_instance_uid, Study.completion_count).where(
                    Study.state == StudyState.COMPLETE,
                    Study.completion_count > Study.routed_generation,
                    ~pull_unfinished(Study.study_instance_uid),  # a half-pulled study waits
                )
            ).all()
            if not studies:
                return made
            rules = load_rules(connection)
            for study_id, study_uid, generation in studies:
                claimed = connection.execute(
                    update(Study)
                    .where(Study.id == study_id, Study.routed_generation < generation)
                    .values(routed_generation=generation)
                ).rowcount
                if claimed == 1:
                    made += self._route(connection, study_id, study_uid, generation, rules)
        return made

    def trigger_complete_series(self) -> list[int]:
        """Start the rules with `trigger = "series"` on their series as soon as it is
        complete, while the study is still open (gateway/completion/series_trigger.py). The
        job has the generation the study's next completion will have, so that completion
        finds it and does not run the rule again unless a late instance changed the series."""
        made: list[int] = []
        with self._writers, self.engine.begin() as connection:
            studies = connection.execute(
                select(Study.id, Study.study_instance_uid, Study.completion_count).where(
                    Study.state.in_(OPEN_STATES), ~pull_unfinished(Study.study_instance_uid)
                )
            ).all()
            if not studies:
                return made
            rules = load_rules(connection)
            if not any(r.enabled and r.trigger == "series" for r in rules):
                return made
            for study_id, study_uid, count in studies:
                made += self._route(connection, study_id, study_uid, count + 1, rules, early=True)
        return made

    def fail_overdue_holds(self) -> list[int]:
        """Route again every complete study held past `series_completeness.hold_s`: its
        series is still incomplete, so the job is made failed with the reason."""
        cutoff = utcnow() - timedelta(seconds=self.settings.routing.series_completeness.hold_s)
        made: list[int] = []
        with self._writers, self.engine.begin() as connection:
            studies = connection.execute(
                select(Study.id, Study.study_instance_uid, Study.routed_generation).where(
                    Study.state == StudyState.COMPLETE,
                    Study.series_held_at <= cutoff,
                    Study.routed_generation == Study.completion_count,
                )
            ).all()
            if not studies:
                return made
            rules = load_rules(connection)
            for study_id, study_uid, generation in studies:
                claimed = connection.execute(  # concurrent routers: one fails it
                    update(Study)
                    .where(Study.id == study_id, Study.series_held_at <= cutoff)
                    .values(series_held_at=None, series_hold_reason=None)
                ).rowcount
                if claimed == 1:
                    made += self._route(
                        connection, study_id, study_uid, generation, rules, overdue=True
                    )
        return made

    def _not_routed(self, connection: Connection, study_uid: str, reason: str) -> list[int]:
        record(
            connection,
            audit_row(
                AuditKind.STUDY_NOT_ROUTED,
                Outcome.SUCCESS,
                actor="router",
                study_instance_uid=study_uid,
                detail={"reason": reason},
            ),
        )
        LOGGER.info("study %s not routed: %s", study_uid, reason)
        return []

    def _route(
        self,
        connection: Connection,
        study_id: int,
        study_uid: str,
        generation: int,
        rules: Sequence[RuleSettings],
        overdue: bool = False,
        early: bool = False,
    ) -> list[int]:
        """`early`: the study is still open; make the job only if the rule's trigger is
        "series" and its series is complete, silently otherwise (this runs every pass)."""
        if early and pulled_only_as_prior(connection, study_uid):
            return []
        if pulled_only_as_prior(connection, study_uid):
            return self._not_routed(connection, study_uid, "pulled as a prior for comparison")
        decision = route_study(connection, study_uid, rules)
        matched, rule = decision.matched, decision.rule
        if early and (matched is None or rule is None or rule.trigger != "series"):
            return []
        if early and rule is not None:
            if rule.pipeline not in self.registry:
                return []
            if earlier_trigger(connection, study_id, rule.name, generation) is not None:
                return []  # started already; the study's completion looks again
        rerun = False
        if not early and rule is not None and rule.trigger == "series":
            started = earlier_trigger(connection, study_id, rule.name, generation)
            if started is not None:
                count = series_instance_count(connection, started.series_instance_uid)
                if count == started.instance_count:
                    return self._not_routed(
                        connection,
                        study_uid,
                        f"rule {rule.name!r}: started on series {started.series_instance_uid} "
                        f"when {started.signal} said it was complete; unchanged since",
                    )
                # A late instance of the series it ran on: run again on the whole series,
                # as a new generation of the study (its results are made anew).
                generation = self._next_generation(connection, study_id)
                rerun = True
        if matched is None or rule is None:
            tried = [r.name for r in rules if r.enabled]
            return self._not_routed(
                connection, study_uid, f"no enabled rule matched (tried {tried or 'none'})"
            )
        if rule.pipeline not in self.registry:  # a rule edited in the database meanwhile
            return self._not_routed(
                connection,
                study_uid,
                f"rule {rule.name!r}: expected a registered pipeline {self.registry.names}, "
                f"found {rule.pipeline!r}",
            )
        description = self.registry.get(rule.pipeline).description
        key = description.model_key
        earlier = connection.execute(
            select(Job.id).where(
                Job.study_instance_uid == study_uid,
                Job.pipeline == rule.pipeline,
                Job.model_key == key,
                Job.shadow_of.is_(None),  # a shadow run (since promoted) delivered nothing
                # a job failed before it started (an incomplete series) reported nothing
                ~and_(Job.state == JobState.FAILED, Job.started_at.is_(None)),
            )
        ).first()
        if earlier is not None and early:
            return []
        if earlier is not None and not rule.rerun_on_update and not rerun:
            return self._not_routed(
                connection,
                study_uid,
                f"rule {rule.name!r}: study updated after its job ran; rerun_on_update is off",
            )
        choice = select_series(
            connection,
            self.settings.spool_dir,
            list(matched.series_instance_uids),
            description.accepts.series_selection().overridden_by(
                self.settings.routing.series_selection
            ),
        )
        failure: str | None = None
        now = utcnow()
        if early:
            if choice.series_instance_uid is None:
                return []  # the study's completion decides, with the reasons
            signal = series_complete_by(
                connection,
                choice.series_instance_uid,
                rule,
                self.settings.routing.series_completeness,
                utcnow(),
            )
            if signal is None:
                return []
        if choice.series_instance_uid is None:
            details = "; ".join((choice.reason, *choice.rejected))
            if choice.code is None or choice.closest_series_uid is None:
                return self._not_routed(connection, study_uid, f"rule {rule.name!r}: {details}")
            # The rule chose this pipeline, but it cannot take any series of the study: a
            # failed job with the reason code, visible and retryable by an operator once
            # the right series is there, never retried by itself.
            series_uid = choice.closest_series_uid
            failure = f"{choice.code}: rule {rule.name!r}, pipeline {rule.pipeline!r}: {details}"
        else:
            series_uid = choice.series_instance_uid
        if failure is None:
            completeness_settings = self.settings.routing.series_completeness
            completeness = check_series_completeness(connection, series_uid, completeness_settings)
            if not completeness.complete:
                hold_s = completeness_settings.hold_s
                if hold_s > 0 and not overdue:
                    hold_study(
                        connection,
                        study_id,
                        study_uid,
                        series_uid,
                        completeness.reason,
                        hold_s,
                        now,
                    )
                    LOGGER.info("study %s held: %s", study_uid, completeness.reason)
                    return []
                waited = f"; no instance filled it within {hold_s:g} s" if hold_s > 0 else ""
                failure = f"incomplete series {series_uid}: {completeness.reason}{waited}"
            else:
                end_hold(connection, study_id, study_uid, series_uid, now)
        destinations = (
            list(rule.destinations)
            if rule.destinations is not None
            else destination_names(connection)  # every enabled one in the database
        )
        job_id = connection.execute(
            insert_ignoring_duplicates(
                connection, Job, ["study_instance_uid", "pipeline", "model_key", "generation"]
            )
            .values(
                study_id=study_id,
                study_instance_uid=study_uid,
                generation=generation,
                rule_name=rule.name,
                pipeline=rule.pipeline,
                pipeline_version=description.version,
                model_key=key,
                series_instance_uid=series_uid,
                destinations=destinations,
                priority=rule.priority.value,
                state=JobState.QUEUED if failure is None else JobState.FAILED,
                last_error=failure,
                finished_at=None if failure is None else now,
                attempts=0,
                created_at=now,
                updated_at=now,
            )
            .returning(Job.id)
        ).scalar()
        if job_id is None:
            return []
        if early:
            connection.execute(
                insert_ignoring_duplicates(
                    connection, SeriesTrigger, ["study_id", "rule_name", "generation"]
                ).values(
                    study_id=study_id,
                    series_instance_uid=series_uid,
                    rule_name=rule.name,
                    generation=generation,
                    instance_count=series_instance_count(connection, series_uid),
                    signal=signal,
                    job_id=int(job_id),
                    triggered_at=now,
                )
            )
            record(
                connection,
                audit_row(
                    AuditKind.SERIES_TRIGGERED,
                    actor="router",
                    study_instance_uid=study_uid,
                    detail={"rule": rule.name, "series": series_uid, "signal": signal},
                    occurred_at=now,
                ),
            )
        requirement = rule.prior
        if failure is None and requirement is not None:  # not sent before it ends waiting
            request_prior(connection, self.settings, int(job_id), study_uid, requirement, now)
        record(
            connection,
            audit_row(
                AuditKind.STUDY_ROUTED,
                actor="router",
                study_instance_uid=study_uid,
                detail={"rule": rule.name, "series": series_uid},
                occurred_at=now,
            ),
            audit_row(
                AuditKind.JOB_QUEUED if failure is None else AuditKind.JOB_FAILED,
                Outcome.SUCCESS if failure is None else Outcome.FAILURE,
                actor="router",
                study_instance_uid=study_uid,
                detail={
                    "job": job_id,
                    "pipeline": rule.pipeline,
                    "generation": generation,
                    "priority": rule.priority.value,
                    "destinations": destinations,
                    **({} if failure is None else {"reason": failure}),
                },
                occurred_at=now,
            ),
        )
        if failure is not None:
            LOGGER.warning("job %s failed: %s", job_id, failure)
            return [int(job_id)]
        shadow_id = queue_shadow_job(
            connection,
            self.registry,
            rule,
            int(job_id),
            study_id,
            study_uid,
            generation,
            series_uid,
            now,
        )
        return [int(job_id)] if shadow_id is None else [int(job_id), shadow_id]

    def _next_generation(self, connection: Connection, study_id: int) -> int:
        """One more completion of the study, routed here (a rerun after a late instance)."""
        connection.execute(
            update(Study)
            .where(Study.id == study_id)
            .values(
                completion_count=Study.completion_count + 1,
                routed_generation=Study.completion_count + 1,
            )
        )
        return int(
            connection.execute(
                select(Study.completion_count).where(Study.id == study_id)
            ).scalar_one()
        )

    def dispatch_queued(self) -> int:
        """Send every queued job not yet handed to the broker, or sent so long ago that its
        message must have been lost (urgent first)."""
        stale = utcnow() - timedelta(seconds=self.settings.queue.resend_queued_after_s)
        release_overdue(self.engine)  # a job whose prior wait ended goes on without it
        with self.engine.connect() as connection:
            jobs = connection.execute(
                select(Job.id, Job.priority)
                .where(
                    Job.state == JobState.QUEUED,
                    or_(Job.enqueued_at.is_(None), Job.enqueued_at < stale),
                    ~waiting_for_prior(),
                )
                .order_by(Job.priority != "urgent", Job.id)
            ).all()
        sent = 0
        for job_id, priority in jobs:
            if self.engine.dialect.name != "postgresql":  # one host: one router
                self.send(job_id, priority)
                with self._writers, self.engine.begin() as connection:
                    connection.execute(
                        update(Job).where(Job.id == job_id).values(enqueued_at=utcnow())
                    )
                sent += 1
                continue
            # Several gateways (hosts) share PostgreSQL: the row stays locked from this check
            # to its mark, so another router skips it instead of sending it too (two copies
            # of a task can run at once on two workers). A crash before the commit leaves it
            # unmarked: sent again, as before.
            with self.engine.begin() as connection:
                due = connection.execute(
                    select(Job.id)
                    .where(
                        Job.id == job_id,
                        Job.state == JobState.QUEUED,
                        or_(Job.enqueued_at.is_(None), Job.enqueued_at < stale),
                    )
                    .with_for_update(skip_locked=True)
                ).first()
                if due is None:
                    continue
                self.send(job_id, priority)
                connection.execute(update(Job).where(Job.id == job_id).values(enqueued_at=utcnow()))
                sent += 1
        return sent

    def run(self, stop: threading.Event, wake: threading.Event | None = None) -> None:
        """Route, sweep and dispatch every `queue.router_poll_interval_s`, and at once when
        `wake` is set (a completion signal completed a study in this process)."""
        while not stop.is_set():
            try:
                self.trigger_complete_series()
                self.route_complete_studies()
                self.fail_overdue_holds()
                self.sweeper.sweep()  # before dispatch: a job queued again goes out now
                self.dispatch_queued()
            except Exception as exc:  # keep going: the database or broker may come back
                LOGGER.error("routing pass failed: %s: %s", type(exc).__name__, exc)
            if wake is None:
                stop.wait(self.settings.queue.router_poll_interval_s)
            else:  # a signal set during the pass makes the next pass start at once
                wake.wait(self.settings.queue.router_poll_interval_s)
                wake.clear()
