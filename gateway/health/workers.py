"""Celery workers: who answers a ping (by hostname) and what each is running (inspect
`active`: the job IDs, with their pipeline from the database). A worker seen before that no
longer answers stays on the grid, red, for `FORGET_AFTER` after its last answer."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from gateway.health.heartbeat import Beat, heartbeats
from gateway.health.status import Level, PartHealth, as_utc, describe_age
from gateway.models import Job
from gateway.settings import GatewaySettings

PART = "worker"
SUMMARY_NAME = "workers"
FORGET_AFTER = timedelta(hours=1)
BROADCAST_SCHEMES = ("redis://", "rediss://", "amqp://", "amqps://", "pyamqp://")
NO_WORKER = "No worker answered: queued jobs will wait."


@dataclass(frozen=True)
class RunningTask:
    job_id: int | None
    started_at: datetime | None


@dataclass(frozen=True)
class WorkerReply:
    hostname: str  # Celery's node name, e.g. gateway-1234@host
    running: tuple[RunningTask, ...]


def _running(task: dict[str, Any]) -> RunningTask:
    args = task.get("args") or []
    job_id = (
        args[0] if isinstance(args, list | tuple) and args and isinstance(args[0], int) else None
    )
    start = task.get("time_start")
    started = datetime.fromtimestamp(start, UTC) if isinstance(start, int | float) else None
    return RunningTask(job_id, started)


def ask_workers(settings: GatewaySettings, broker_url: str, timeout_s: float) -> list[WorkerReply]:
    """Ping every worker through the broker, then ask those that answered what they run.
    Raises on a broker that cannot be reached."""
    from gateway.queue.app import make_celery

    app = make_celery(settings, broker_url)
    try:
        replies = app.control.ping(timeout=timeout_s) or []
        names = sorted(name for reply in replies for name in reply)
        active: dict[str, list[dict[str, Any]]] = {}
        if names:
            inspect = app.control.inspect(destination=names, timeout=timeout_s, limit=len(names))
            active = inspect.active() or {}
    finally:
        app.close()
    return [
        WorkerReply(name, tuple(_running(task) for task in active.get(name, []))) for name in names
    ]


def _pipelines(engine: Engine, job_ids: list[int]) -> dict[int, str]:
    if not job_ids:
        return {}
    with engine.connect() as connection:
        rows = connection.execute(select(Job.id, Job.pipeline).where(Job.id.in_(job_ids)))
        return {int(job_id): str(pipeline) for job_id, pipeline in rows}


def _describe(task: RunningTask, pipelines: dict[int, str], now: datetime) -> str:
    what = f"job {task.job_id}" if task.job_id is not None else "a task"
    if task.job_id in pipelines:
        what += f" ({pipelines[task.job_id]})"
    if task.started_at is not None:
        what += f" for {describe_age((now - task.started_at).total_seconds())}"
    return what


def judge_replies(
    settings: GatewaySettings,
    engine: Engine,
    replies: list[WorkerReply],
    now: datetime,
    no_reply: str = NO_WORKER,
) -> tuple[list[PartHealth], list[Beat]]:
    """A row per worker that answered or answered within FORGET_AFTER, and a summary row;
    with the beats to record for those that answered."""
    pipelines = _pipelines(
        engine, [t.job_id for r in replies for t in r.running if t.job_id is not None]
    )
    long_task_s = settings.queue.task_time_limit_s / 2
    rows: list[PartHealth] = []
    beats: list[Beat] = []
    for reply in replies:
        doing = [_describe(t, pipelines, now) for t in reply.running]
        slow = [
            t
            for t in reply.running
            if t.started_at is not None and (now - t.started_at).total_seconds() > long_task_s
        ]
        if slow:
            level, summary = Level.AMBER, f"running {'; '.join(doing)}: longer than usual"
        else:
            level, summary = Level.GREEN, f"running {'; '.join(doing)}" if doing else "idle"
        rows.append(PartHealth(PART, reply.hostname, level, summary, now))
        beats.append(
            Beat(
                name=reply.hostname,
                part=PART,
                hostname=reply.hostname.rpartition("@")[2] or socket.gethostname(),
                pid=0,
                interval_seconds=0.0,
                detail={"running": doing},
            )
        )
    answered = {r.hostname for r in replies}
    with engine.connect() as connection:
        known = heartbeats(connection, PART)
    for row in known:
        last = as_utc(row.beat_at)
        if row.name in answered or now - last >= FORGET_AFTER:
            continue
        rows.append(
            PartHealth(
                PART,
                row.name,
                Level.RED,
                f"not answering: last answered {describe_age((now - last).total_seconds())} ago",
                last,
            )
        )
    if replies:
        overall = PartHealth(PART, SUMMARY_NAME, Level.GREEN, f"{len(replies)} answering", now)
    else:
        last_seen = max((as_utc(r.beat_at) for r in known), default=None)
        overall = PartHealth(PART, SUMMARY_NAME, Level.RED, no_reply, last_seen)
    return [overall, *sorted(rows, key=lambda r: r.name)], beats


def worker_health(
    settings: GatewaySettings, engine: Engine, broker_url: str, now: datetime
) -> tuple[list[PartHealth], list[Beat]]:
    if not broker_url.startswith(BROADCAST_SCHEMES):
        return [
            PartHealth(
                PART,
                SUMMARY_NAME,
                Level.AMBER,
                "unknown: the embedded broker cannot ask the workers",
                None,
            )
        ], []
    replies = ask_workers(settings, broker_url, settings.web.probe_timeout_s)
    return judge_replies(settings, engine, replies, now)
