"""Study assembly: a study is complete once a completion signal says so (an MPPS COMPLETED
or a storage commitment whose listed instances are all stored, gateway/completion/), or
else once no instance has arrived for the quiet period, the fallback: the quiet period of the
rule that matches the study (its `quiet_period_s`) or else `assembly.quiet_period_s`.

The state is in the database, so a restart loses nothing: studies whose quiet period passed,
or whose signal was fulfilled, while the gateway was down complete on the first pass after
start-up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, select, update

from gateway.audit import AuditKind, audit_row, record, utcnow
from gateway.completion.signals import (
    QUIET_PERIOD_SIGNAL,
    settle_commitments,
    settle_completed_mpps,
)
from gateway.database import writer_queue
from gateway.models import Study, StudyState
from gateway.routing.config import RuleSettings
from gateway.routing.rules import route_study
from gateway.routing.seed import InvalidStoredRule, load_rules

LOGGER = logging.getLogger(__name__)
_OPEN_STATES = (StudyState.RECEIVING, StudyState.UPDATED)


class StudyAssembler:
    def __init__(
        self,
        engine: Engine,
        quiet_period_s: float,
        on_study_complete: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.quiet_period = timedelta(seconds=quiet_period_s)
        # wakes the router in this process: a study this pass completed is routed now, not
        # at the router's next poll (a signal fulfilled here races the listener's own check)
        self.on_study_complete = on_study_complete

    def complete_quiet_studies(self, now: datetime | None = None) -> list[str]:
        """Mark every open study whose last instance is older than the quiet period complete.

        Returns their Study Instance UIDs. The conditional UPDATE makes concurrent passes
        (several processes) safe: each study completes once per quiet period.
        """
        now = now or utcnow()
        completed: list[str] = []
        with self.engine.begin() as connection:
            rules = self._rules_with_quiet_periods(connection)
            shortest = min(
                [self.quiet_period, *(timedelta(seconds=r.quiet_period_s or 0) for r in rules)]
            )
            candidates = connection.execute(
                select(Study.id, Study.study_instance_uid, Study.instance_count).where(
                    Study.state.in_(_OPEN_STATES), Study.last_received_at <= now - shortest
                )
            ).all()
            for study_id, study_uid, instance_count in candidates:
                period = self._quiet_period(connection, study_uid, rules)
                cutoff = now - period
                result = connection.execute(
                    update(Study)
                    .where(
                        Study.id == study_id,
                        Study.state.in_(_OPEN_STATES),
                        Study.last_received_at <= cutoff,
                    )
                    .values(
                        state=StudyState.COMPLETE,
                        completed_at=now,
                        completion_count=Study.completion_count + 1,
                        completed_by=QUIET_PERIOD_SIGNAL,
                    )
                )
                if result.rowcount != 1:
                    continue
                completed.append(study_uid)
                record(
                    connection,
                    audit_row(
                        AuditKind.STUDY_COMPLETE,
                        actor="assembly",
                        study_instance_uid=study_uid,
                        detail={
                            "instances": instance_count,
                            "quiet_period_s": period.total_seconds(),
                        },
                        occurred_at=now,
                    ),
                )
        for study_uid in completed:
            LOGGER.info("study %s complete", study_uid)
        return completed

    @staticmethod
    def _rules_with_quiet_periods(connection: Connection) -> list[RuleSettings]:
        """The rules in order when an enabled one has its own quiet period, else none (the
        usual case: no routing work in this pass)."""
        try:
            rules: list[RuleSettings] = list(load_rules(connection))
        except InvalidStoredRule as exc:  # the router reports it; assembly goes on
            LOGGER.error("rules not read, every study gets the default quiet period: %s", exc)
            return []
        if any(r.enabled and r.quiet_period_s is not None for r in rules):
            return rules
        return []

    def _quiet_period(
        self, connection: Connection, study_uid: str, rules: list[RuleSettings]
    ) -> timedelta:
        """The quiet period of the rule that matches the study now; the default without one."""
        if not rules:
            return self.quiet_period
        rule = route_study(connection, study_uid, rules).rule
        if rule is None or rule.quiet_period_s is None:
            return self.quiet_period
        return timedelta(seconds=rule.quiet_period_s)

    def complete_signalled_studies(self, now: datetime | None = None) -> list[str]:
        """Complete the studies whose MPPS or storage commitment is fulfilled: the listener
        checks as instances arrive, this pass catches what it could not (a restart between
        the signal and the last instance, an instance that came by STOW-RS or a pull)."""
        now = now or utcnow()
        with writer_queue(self.engine), self.engine.begin() as connection:
            completed = settle_completed_mpps(connection, now)
            completed += settle_commitments(connection, now)
        for study_uid in completed:
            LOGGER.info("study %s complete by its completion signal", study_uid)
        return completed

    def run(self, stop: threading.Event, poll_interval_s: float) -> None:
        while not stop.is_set():
            try:
                completed = self.complete_signalled_studies()
                completed += self.complete_quiet_studies()
                if completed and self.on_study_complete is not None:
                    self.on_study_complete()
            except Exception as exc:  # keep polling: the database may come back
                LOGGER.error("assembly pass failed: %s", type(exc).__name__)
            stop.wait(poll_interval_s)
