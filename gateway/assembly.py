"""Study assembly: a study is complete once no instance has arrived for the quiet period.

The state is in the database, so a restart loses nothing: studies whose quiet period passed
while the gateway was down complete on the first pass after start-up.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import Engine, select, update

from gateway.audit import AuditKind, audit_row, record, utcnow
from gateway.models import Study, StudyState

LOGGER = logging.getLogger(__name__)
_OPEN_STATES = (StudyState.RECEIVING, StudyState.UPDATED)


class StudyAssembler:
    def __init__(self, engine: Engine, quiet_period_s: float) -> None:
        self.engine = engine
        self.quiet_period = timedelta(seconds=quiet_period_s)

    def complete_quiet_studies(self, now: datetime | None = None) -> list[str]:
        """Mark every open study whose last instance is older than the quiet period complete.

        Returns their Study Instance UIDs. The conditional UPDATE makes concurrent passes
        (several processes) safe: each study completes once per quiet period.
        """
        now = now or utcnow()
        cutoff = now - self.quiet_period
        completed: list[str] = []
        with self.engine.begin() as connection:
            candidates = connection.execute(
                select(Study.id, Study.study_instance_uid, Study.instance_count).where(
                    Study.state.in_(_OPEN_STATES), Study.last_received_at <= cutoff
                )
            ).all()
            for study_id, study_uid, instance_count in candidates:
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
                            "quiet_period_s": self.quiet_period.total_seconds(),
                        },
                        occurred_at=now,
                    ),
                )
        for study_uid in completed:
            LOGGER.info("study %s complete", study_uid)
        return completed

    def run(self, stop: threading.Event, poll_interval_s: float) -> None:
        while not stop.is_set():
            try:
                self.complete_quiet_studies()
            except Exception as exc:  # keep polling: the database may come back
                LOGGER.error("assembly pass failed: %s", type(exc).__name__)
            stop.wait(poll_interval_s)
