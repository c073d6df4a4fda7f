"""The Celery task: a job ID in, the job's stages run by JobRunner.

Every way out of the task ends the job or leaves it to run again: success, a transient error
(retried with back-off), retries exhausted or an unexpected error past `max_retries` (failed
with the reason), the soft time limit (failed by the task itself), the hard time limit (the
pool process is killed: failed by the worker's main process through `task_failure`). Where
even that cannot write (the database is down), the router's stuck-job sweeper ends it later.
"""

from __future__ import annotations

import logging
import threading
from contextlib import AbstractContextManager
from typing import Any

from celery import Celery, Task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure

from gateway.database import make_engine, writer_queue
from gateway.jobs.sweeper import fail_unfinished_job
from gateway.queue.app import PROCESS_JOB
from gateway.settings import GatewaySettings
from workers.jobs.runner import JobRunner, raise_time_limit

LOGGER = logging.getLogger(__name__)

MAX_ERROR_TEXT = 200


class _WorkerState:
    """Engine and runner of one worker process, made on first use (after the fork: neither
    database connections nor gRPC channels survive a fork)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self._runner: JobRunner | None = None
        self._writers: AbstractContextManager[object] | None = None

    @property
    def runner(self) -> JobRunner:
        if self._runner is None:
            engine = make_engine(self.settings)
            self._runner = JobRunner(self.settings, engine)
        return self._runner

    @property
    def writers(self) -> AbstractContextManager[object]:
        if self._writers is None:
            self._writers = writer_queue(self.runner.engine)
        return self._writers


def technical_reason(exc: BaseException) -> str:
    """The exception's type and the first line of its message, cut short: enough to act on,
    no traceback (and no dataset dump) in the job row or the audit log."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > MAX_ERROR_TEXT:
        text = text[:MAX_ERROR_TEXT] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def time_limit_reason(settings: GatewaySettings) -> str:
    return f"task time limit of {settings.queue.task_time_limit_s:g} s reached"


def _record_time_limit(settings: GatewaySettings, job_id: int) -> None:
    """Fail the job from the worker's main process. A short-lived engine: this process forks
    new pool processes, which must not inherit its connections."""
    engine = make_engine(settings)
    try:
        fail_unfinished_job(engine, job_id, time_limit_reason(settings), "worker")
    except Exception as exc:  # the database is down: the sweeper ends the job later
        LOGGER.error("job %s: could not record the time limit: %s", job_id, technical_reason(exc))
    finally:
        engine.dispose()


def register_tasks(app: Celery, settings: GatewaySettings) -> None:
    state = _WorkerState(settings)
    queue = settings.queue

    def end_job(job_id: int, reason: str) -> None:
        """Fail the job unless it ended already; if the database is down this raises and
        the sweeper ends the job later."""
        fail_unfinished_job(state.runner.engine, job_id, reason, "worker", state.writers)

    @app.task(name=PROCESS_JOB, bind=True, max_retries=queue.max_retries)
    def process_job(self: Task, job_id: int) -> str:
        retries = int(self.request.retries or 0)
        try:
            try:
                outcome = state.runner.run(
                    int(job_id),
                    worker=str(self.request.hostname or ""),
                    task_id=str(self.request.id or ""),
                )
            except Exception as exc:
                raise_time_limit(exc)  # however deep a library wrapped it
                raise
        except SoftTimeLimitExceeded:
            end_job(int(job_id), time_limit_reason(settings))
            return "failed"
        except Exception as exc:  # the database is down, or a bug: retry, the job stays
            LOGGER.exception("job %s raised", job_id)
            if retries >= queue.max_retries:
                end_job(
                    int(job_id), f"gave up after {retries + 1} attempts: {technical_reason(exc)}"
                )
                return "failed"
            raise self.retry(countdown=queue.retry_backoff_s(retries), exc=exc) from exc
        priority: Any = (self.request.delivery_info or {}).get("priority")
        if outcome.recheck_in_s is not None:
            # Held by another runner: one message looks again when the lease expires, so
            # a runner that died is taken over and a live one is never run beside.
            self.apply_async((job_id,), countdown=outcome.recheck_in_s, priority=priority)
            return "skipped"
        if outcome.retry_in_s is None:
            return outcome.state.value
        if retries >= queue.max_retries:
            end_job(int(job_id), f"gave up after {retries + 1} attempts: {outcome.message}")
            return "failed"
        countdown = outcome.retry_in_s or queue.retry_backoff_s(retries)
        raise self.retry(countdown=countdown, priority=priority)

    def on_hard_time_limit(
        sender: Any = None,
        task_id: str | None = None,
        exception: BaseException | None = None,
        args: Any = None,
        **_: Any,
    ) -> None:
        """The hard limit is killing the pool process: the worker's main process (where
        Celery sends this signal for a hard time limit) ends the job, since Celery
        acknowledges the message and nothing else would. In a thread: the main process must
        not wait for the database (it kills the pool process and serves the others only
        after this returns)."""
        if getattr(sender, "name", None) != PROCESS_JOB:
            return
        if not isinstance(exception, TimeLimitExceeded) or not args:
            return
        job_id = int(args[0])
        threading.Thread(
            target=_record_time_limit, args=(settings, job_id), name=f"time-limit-{job_id}"
        ).start()

    # The task is registered once per worker process tree; weak=False keeps the closure.
    task_failure.connect(on_hard_time_limit, weak=False)
