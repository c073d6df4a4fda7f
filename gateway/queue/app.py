"""The queue's Celery app, made from the settings (no module-level app): the router sends
with it, and the workers (workers/celery_app.py) register the task on it and consume.

Delivery guarantees: tasks carry only a job ID (JSON), are acknowledged after they finish
(`acks_late`) and given back if the worker process dies (`reject_on_worker_lost`), each
worker process reserves one task at a time (prefetch 1), and Redis redelivers an
unacknowledged task only after `visibility_timeout_s`, longer than the hard time limit.
A soft time limit a little before the hard one lets the task record the job failed; a hard
limit acknowledges the message, and the task's `task_failure` handler ends the job
(workers/tasks.py).
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from gateway.queue.broker import resolve_broker_url
from gateway.settings import GatewaySettings

PROCESS_JOB = "gateway.process_job"
QUEUE = "gateway"
# Redis: priorities 0 (first) .. 9; urgent rules go ahead of routine work.
PRIORITY = {"urgent": 0, "routine": 5}


def make_celery(settings: GatewaySettings, broker_url: str | None = None) -> Celery:
    """The queue's app: the router sends with it as made; a worker registers the task on it
    (workers/tasks.py) and consumes."""
    url = broker_url or resolve_broker_url(settings)
    app = Celery("pacs_gateway", broker=url, set_as_current=False)
    p = settings.queue
    transport_options: dict[str, Any] = {}
    if url.startswith(("redis://", "rediss://")):
        transport_options.update(
            visibility_timeout=p.visibility_timeout_s,
            priority_steps=list(range(10)),
            sep=":",
            queue_order_strategy="priority",
        )
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        task_default_priority=PRIORITY["routine"],
        task_time_limit=p.task_time_limit_s,
        task_soft_time_limit=p.task_soft_time_limit_s,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        # A broker that is down must not stall the router: give up quickly, the job stays
        # queued without `enqueued_at` and the next pass sends it.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1.0,
        },
        broker_connection_timeout=3,
        worker_hijack_root_logger=False,
        worker_concurrency=p.worker_concurrency,
        worker_send_task_events=False,
        enable_utc=True,
    )
    if p.visibility_timeout_s <= p.task_time_limit_s:
        raise ValueError(
            f"queue.visibility_timeout_s: expected more than task_time_limit_s "
            f"({p.task_time_limit_s:g}), found {p.visibility_timeout_s:g}"
        )
    return app


def send_job(app: Celery, job_id: int, priority: str) -> None:
    """Send a job by its ID (the message carries nothing else), urgent ahead of routine."""
    app.send_task(PROCESS_JOB, args=[job_id], queue=QUEUE, priority=PRIORITY.get(priority, 5))
