"""The worker process: the queue's Celery app (gateway/queue/app.py) with the job task
registered (workers/tasks.py), consuming until stopped."""

from __future__ import annotations

import os

from gateway.queue.app import QUEUE, make_celery
from gateway.settings import GatewaySettings


def run_worker(settings: GatewaySettings, broker_url: str | None = None) -> None:
    """A Celery worker (prefork, `queue.worker_concurrency` processes) until stopped."""
    from workers.tasks import register_tasks

    app = make_celery(settings, broker_url)
    register_tasks(app, settings)
    app.worker_main(
        [
            "worker",
            f"--loglevel={settings.log_level}",
            f"--concurrency={settings.queue.worker_concurrency}",
            "--pool=prefork",
            f"--queues={QUEUE}",
            f"--hostname={settings.queue.worker_hostname or f'gateway-{os.getpid()}@%h'}",
            "--without-gossip",
            "--without-mingle",
        ]
    )
