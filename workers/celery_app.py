"""The Celery app, made from the settings (no module-level app).

Delivery guarantees: tasks carry only a job ID (JSON), are acknowledged after they finish
(`acks_late`) and given back if the worker process dies (`reject_on_worker_lost`), each
worker process reserves one task at a time (prefetch 1), and Redis redelivers an
unacknowledged task only after `visibility_timeout_s`, longer than the hard time limit.
A soft time limit a little before the hard one lets the task record the job failed; a hard
limit acknowledges the message, and the task's `task_failure` handler ends the job
(workers/tasks.py).
"""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlparse

from celery import Celery

from gateway.settings import GatewaySettings

PROCESS_JOB = "gateway.process_job"
QUEUE = "gateway"
# Redis: priorities 0 (first) .. 9; urgent rules go ahead of routine work.
PRIORITY = {"urgent": 0, "routine": 5}
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _reachable(url: str, timeout_s: float = 0.5) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection(
            (parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout=timeout_s
        ):
            return True
    except OSError:
        return False


def resolve_broker_url(settings: GatewaySettings) -> str:
    """The configured broker; else local Redis when reachable; else Celery over SQLite in
    the data dir (embedded: nothing to install or run)."""
    if settings.pipeline.broker_url:
        return settings.pipeline.broker_url
    if _reachable(DEFAULT_REDIS_URL):
        return DEFAULT_REDIS_URL
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqla+sqlite:///{(settings.data_dir / 'broker.sqlite').resolve()}"


def make_celery(settings: GatewaySettings, broker_url: str | None = None) -> Celery:
    url = broker_url or resolve_broker_url(settings)
    app = Celery("pacs_gateway", broker=url, set_as_current=False)
    p = settings.pipeline
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
            f"pipeline.visibility_timeout_s: expected more than task_time_limit_s "
            f"({p.task_time_limit_s:g}), found {p.visibility_timeout_s:g}"
        )
    return app


def send_job(app: Celery, job_id: int, priority: str) -> None:
    app.send_task(PROCESS_JOB, args=[job_id], queue=QUEUE, priority=PRIORITY.get(priority, 5))


def run_worker(settings: GatewaySettings, broker_url: str | None = None) -> None:
    """A Celery worker (prefork, `pipeline.worker_concurrency` processes) until stopped."""
    import os

    from workers.tasks import register_tasks

    app = make_celery(settings, broker_url)
    register_tasks(app, settings)
    app.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level}",
            f"--concurrency={settings.pipeline.worker_concurrency}",
            "--pool=prefork",
            f"--queues={QUEUE}",
            f"--hostname=gateway-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ]
    )
