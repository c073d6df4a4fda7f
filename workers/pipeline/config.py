"""Settings of the pipeline: broker, workers, retries (nested in the gateway settings)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PipelineSettings(BaseModel):
    broker_url: str | None = Field(
        default=None,
        description="Celery broker. None: Redis on 127.0.0.1:6379 when reachable, else an "
        "embedded broker in the data dir (Celery over SQLite).",
    )
    visibility_timeout_s: float = Field(
        default=7200.0,
        gt=0,
        description="Redis redelivers an unacknowledged task after this long: keep it longer "
        "than the longest task (task_time_limit_s).",
    )
    task_time_limit_s: float = Field(default=1800.0, gt=0, description="Hard limit per task.")
    worker_concurrency: int = Field(default=1, ge=1, le=64, description="Worker processes.")
    max_retries: int = Field(default=20, ge=0, description="Task retries of transient errors.")
    retry_backoff_initial_s: float = Field(default=5.0, gt=0)
    retry_backoff_max_s: float = Field(default=300.0, gt=0)
    router_poll_interval_s: float = Field(default=1.0, gt=0)
    resend_queued_after_s: float = Field(
        default=900.0,
        gt=0,
        description="Send a job again that is still queued this long after it was sent (its "
        "message lost, e.g. a Redis restart without persistence); the task is idempotent.",
    )

    def retry_backoff_s(self, retries: int) -> float:
        return float(min(self.retry_backoff_max_s, self.retry_backoff_initial_s * 2**retries))
