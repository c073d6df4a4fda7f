"""The puller inside `pacs-gateway serve`: carries out queued retrospective runs (started
from the UI or the API) and finds the priors jobs wait for, each in its own thread so a long
run never holds up a waiting job."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from sqlalchemy import Engine, update

from gateway.audit import utcnow
from gateway.database import writer_queue
from gateway.models import PullRun
from gateway.pull.ledger import RunState
from gateway.pull.priors import PriorResolver, claim_waiting
from gateway.pull.retrospective import execute_run
from gateway.settings import GatewaySettings

LOGGER = logging.getLogger(__name__)


class PullWorker:
    def __init__(self, settings: GatewaySettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

    @property
    def lease_s(self) -> float:
        """How long one study may take, all attempts: a claim older than this is dead."""
        pull = self.settings.pull
        return pull.max_attempts * (pull.study_timeout_s + pull.backoff_max_s) + 60.0

    def requeue_abandoned_runs(self) -> int:
        """Runs left running by a process that died: queued again (their pulled studies
        stay pulled; the rest are tried again)."""
        stale = utcnow() - timedelta(seconds=self.lease_s)
        with writer_queue(self.engine), self.engine.begin() as connection:
            return int(
                connection.execute(
                    update(PullRun)
                    .where(PullRun.state == RunState.RUNNING.value, PullRun.updated_at < stale)
                    .values(state=RunState.QUEUED.value, updated_at=utcnow())
                ).rowcount
            )

    def run_runs(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.requeue_abandoned_runs()
                if execute_run(self.settings, self.engine, stop=stop) is not None:
                    continue  # another may be queued
            except Exception as exc:  # keep going: the database may come back
                LOGGER.error("pull run pass failed: %s: %s", type(exc).__name__, exc)
            stop.wait(self.settings.pull.poll_interval_s)

    def run_priors(self, stop: threading.Event) -> None:
        resolver = PriorResolver(self.settings, self.engine, stop)
        while not stop.is_set():
            try:
                claim = claim_waiting(self.engine, self.lease_s)
                if claim is not None:
                    resolver.resolve(claim)
                    continue
            except Exception as exc:
                LOGGER.error("prior pass failed: %s: %s", type(exc).__name__, exc)
            stop.wait(self.settings.pull.poll_interval_s)

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self.run_runs, args=(stop,), name="pull-runs", daemon=True),
            threading.Thread(target=self.run_priors, args=(stop,), name="pull-priors", daemon=True),
        ]
        for thread in threads:
            thread.start()
        return threads
