"""Settings of the job queue: broker, workers, time limits, retries (the gateway settings'
`queue` section). Shared ground: the router sends to the queue, the workers take from it."""

from __future__ import annotations

from typing import Self

from pydantic import Field, model_validator

from gateway.settings_section import SettingsSection


class QueueSettings(SettingsSection):
    """The Celery broker and workers, task time limits and retries, the router's pace."""

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
    task_time_limit_s: float = Field(
        default=1800.0,
        gt=0,
        description="Hard limit per task (the pool process is killed); a soft limit a little "
        "earlier lets the task record the job failed with the reason itself.",
    )
    worker_concurrency: int = Field(default=1, ge=1, le=64, description="Worker processes.")
    worker_hostname: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]+@[A-Za-z0-9._-]+$",
        description="The worker's Celery node name (name@host), recorded on each job it "
        "starts. None: gateway-<pid>@<this host's name>.",
    )
    job_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="A running job's lease, renewed every third of it: a second message for "
        "the job waits it out; a job whose worker died is taken over this long after.",
    )
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
    stuck_job_after_s: float = Field(
        default=3600.0,
        gt=0,
        description="A running job (running, inferred, results_built) with no update for this "
        "long is stuck (its worker died where nothing could record it): the router's sweeper "
        "queues it again while attempts remain, else fails it. Must exceed task_time_limit_s "
        "+ retry_backoff_max_s (the longest a live job goes without an update).",
    )

    @model_validator(mode="after")
    def _stuck_after_outlives_a_task(self) -> Self:
        longest_quiet = self.task_time_limit_s + self.retry_backoff_max_s
        if self.stuck_job_after_s <= longest_quiet:
            raise ValueError(
                f"stuck_job_after_s: expected more than task_time_limit_s + "
                f"retry_backoff_max_s ({longest_quiet:g}), found {self.stuck_job_after_s:g}"
            )
        return self

    @property
    def task_soft_time_limit_s(self) -> float:
        """The soft limit: the task stops and records the failure before the hard kill
        (10 % of the hard limit earlier, at most 60 s)."""
        return self.task_time_limit_s - min(60.0, self.task_time_limit_s * 0.1)

    def retry_backoff_s(self, retries: int) -> float:
        return float(min(self.retry_backoff_max_s, self.retry_backoff_initial_s * 2**retries))
