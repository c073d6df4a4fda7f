"""The listener's one call per stored instance: does it fulfil a pending completion signal?

Most instances concern no pending signal (the MPPS usually comes after the images), so the
answer comes from a set re-read at most every `signal_refresh_s`, never a query per
instance. Only an instance of a study, series or commitment that waits runs the check, and
the assembly pass repeats it every second, so nothing depends on this process's memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from gateway.audit import utcnow
from gateway.completion.signals import (
    PendingSignals,
    pending_signals,
    settle_commitments,
    settle_completed_mpps,
)
from gateway.database import writer_queue

LOGGER = logging.getLogger(__name__)


class CompletionWatch:
    def __init__(
        self,
        engine: Engine,
        refresh_s: float,
        on_commitment_instance: Callable[[], None] | None = None,
        on_study_complete: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self.on_commitment_instance = on_commitment_instance
        # wakes the router in this process: a study complete by its signal is routed now,
        # not at the router's next poll (up to `queue.router_poll_interval_s` later)
        self.on_study_complete = on_study_complete
        self._lock = threading.Lock()
        self._pending = PendingSignals()
        self._loaded_at = float("-inf")

    def _current(self) -> PendingSignals:
        now = time.monotonic()
        with self._lock:
            if now - self._loaded_at < self.refresh_s:
                return self._pending
            self._loaded_at = now  # one reader refreshes; the others use the last set
        with self.engine.connect() as connection:
            pending = pending_signals(connection)
            connection.rollback()
        with self._lock:
            self._pending = pending
        return pending

    def invalidate(self) -> None:
        """A signal arrived in this process: re-read the set on the next instance."""
        with self._lock:
            self._loaded_at = float("-inf")

    def instance_stored(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> None:
        """Never raises: the instance is stored whatever happens here."""
        try:
            pending = self._current()
            if not pending.concerns(study_uid, series_uid, sop_instance_uid):
                return
            if sop_instance_uid in pending.sop_instances and self.on_commitment_instance:
                self.on_commitment_instance()  # its report may be due now
            self.check()
        except Exception as exc:  # the assembly pass checks again within a second
            LOGGER.error("completion check failed: %s", type(exc).__name__)

    def check(self) -> list[str]:
        """Complete the studies whose pending signals are fulfilled now."""
        now = utcnow()
        with writer_queue(self.engine), self.engine.begin() as connection:
            completed = settle_completed_mpps(connection, now)
            completed += settle_commitments(connection, now)
        if completed:
            self.invalidate()
            for study_uid in completed:
                LOGGER.info("study %s complete by its completion signal", study_uid)
            if self.on_study_complete is not None:
                self.on_study_complete()
        return completed
