"""The Celery task: a job ID in, the job's stages run by JobRunner."""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, Task

from gateway.database import make_engine
from gateway.settings import GatewaySettings
from workers.celery_app import PROCESS_JOB
from workers.pipeline.runner import JobRunner

LOGGER = logging.getLogger(__name__)


class _WorkerState:
    """Engine and runner of one worker process, made on first use (after the fork: neither
    database connections nor gRPC channels survive a fork)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._runner: JobRunner | None = None

    @property
    def runner(self) -> JobRunner:
        if self._runner is None:
            from workers.inference.pipeline import InferenceClient

            engine = make_engine(self.settings)
            self._runner = JobRunner(
                self.settings, engine, lambda: InferenceClient(self.settings.inference)
            )
        return self._runner


def register_tasks(app: Celery, settings: GatewaySettings) -> None:
    state = _WorkerState(settings)
    pipeline = settings.pipeline

    @app.task(name=PROCESS_JOB, bind=True, max_retries=pipeline.max_retries)
    def process_job(self: Task, job_id: int) -> str:
        retries = int(self.request.retries or 0)
        try:
            outcome = state.runner.run(int(job_id))
        except Exception as exc:  # the database is down, or a bug: retry, the job stays
            LOGGER.exception("job %s raised", job_id)
            if retries >= pipeline.max_retries:
                raise
            raise self.retry(countdown=pipeline.retry_backoff_s(retries), exc=exc) from exc
        if outcome.retry_in_s is None:
            return outcome.state.value
        if retries >= pipeline.max_retries:
            state.runner.fail(
                int(job_id), f"gave up after {retries + 1} attempts: {outcome.message}"
            )
            return "failed"
        countdown = outcome.retry_in_s or pipeline.retry_backoff_s(retries)
        priority: Any = (self.request.delivery_info or {}).get("priority")
        raise self.retry(countdown=countdown, priority=priority)
