"""A job's lease: the one runner that may run its stages now.

A job's task message can arrive twice (the router sends a job again that still looks unsent;
the broker redelivers a message whose ack was lost), and two workers must not run the same
job at once: both would infer, build and send. Before its stages a runner takes the lease
with one conditional UPDATE (free, expired, or the job's own): on SQLite and PostgreSQL
exactly one of several runners at the same moment changes the row. The holder renews it
while it runs (a thread: a stage may outlast the lease) and gives it back when it stops. A
runner that finds a live lease does nothing; one that finds an expired lease (its holder
died: SIGKILL, OOM, power loss) takes the job over, and the stages done skip as on any rerun.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, or_, select, update

from gateway.audit import utcnow
from gateway.models import TERMINAL_JOB_STATES, Job

LOGGER = logging.getLogger(__name__)

HOLDER_LENGTH = 255  # the column's width


def holder_name(worker: str, task_id: str) -> str:
    """Who holds a lease: the worker (Celery node name, else this host), the process, the
    task message, and a token of this attempt (two attempts never share a name)."""
    node = worker or socket.gethostname()
    name = f"{node}/{os.getpid()}/{task_id or '-'}/{uuid.uuid4().hex[:8]}"
    return name[-HOLDER_LENGTH:]


@dataclass(frozen=True)
class ClaimResult:
    won: bool
    holder: str | None
    """The winner's name when lost (None: the job ended or is gone)."""
    lease_until: datetime | None
    took_over_from: str | None = None
    """When won: the holder whose lease had expired (a dead runner), else None."""


def claim_job(
    engine: Engine,
    writers: AbstractContextManager[object],
    job_id: int,
    holder: str,
    lease_s: float,
    now: datetime | None = None,
) -> ClaimResult:
    """Take the job's lease unless another runner holds a live one or the job has ended."""
    now = now or utcnow()
    until = now + timedelta(seconds=lease_s)
    with writers, engine.begin() as connection:
        previous = connection.execute(
            select(Job.claimed_by, Job.lease_until).where(Job.id == job_id)
        ).one_or_none()
        won = connection.execute(
            update(Job)
            .where(
                Job.id == job_id,
                Job.state.not_in(TERMINAL_JOB_STATES),
                or_(
                    Job.claimed_by.is_(None),
                    Job.lease_until.is_(None),
                    Job.lease_until < now,
                    Job.claimed_by == holder,
                ),
            )
            .values(claimed_by=holder, lease_until=until)
        ).rowcount
        if won == 1:
            # `previous` was read before the UPDATE: on PostgreSQL another runner may have
            # changed it in between; it only names whom this one took over from.
            dead = previous.claimed_by if previous is not None else None
            return ClaimResult(True, holder, until, dead if dead != holder else None)
        current = connection.execute(
            select(Job.claimed_by, Job.lease_until).where(Job.id == job_id)
        ).one_or_none()
    if current is None:
        return ClaimResult(False, None, None)
    return ClaimResult(False, current.claimed_by, current.lease_until)


def renew_lease(
    engine: Engine,
    writers: AbstractContextManager[object],
    job_id: int,
    holder: str,
    lease_s: float,
) -> bool:
    """Extend the holder's lease; False when it is no longer the holder (taken over)."""
    until = utcnow() + timedelta(seconds=lease_s)
    with writers, engine.begin() as connection:
        return (
            connection.execute(
                update(Job)
                .where(Job.id == job_id, Job.claimed_by == holder)
                .values(lease_until=until)
            ).rowcount
            == 1
        )


def release_lease(
    engine: Engine, writers: AbstractContextManager[object], job_id: int, holder: str
) -> None:
    """Give the lease back (a retry or a duplicate message may then take the job at once)."""
    with writers, engine.begin() as connection:
        connection.execute(
            update(Job)
            .where(Job.id == job_id, Job.claimed_by == holder)
            .values(claimed_by=None, lease_until=None)
        )


class LeaseKeeper:
    """Renews a held lease every third of its length until stopped. A failed renewal (the
    database down a moment) is retried at the next tick; a lost lease is logged and ends the
    renewals: the lease expired while this runner was frozen, and another runner owns the
    job now."""

    def __init__(
        self,
        engine: Engine,
        writers: AbstractContextManager[object],
        job_id: int,
        holder: str,
        lease_s: float,
    ) -> None:
        self._args = (engine, writers, job_id, holder, lease_s)
        self._stop = threading.Event()
        self.lost = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"job-lease-{job_id}", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        engine, writers, job_id, holder, lease_s = self._args
        while not self._stop.wait(lease_s / 3):
            try:
                if not renew_lease(engine, writers, job_id, holder, lease_s):
                    self.lost.set()
                    LOGGER.error("job %d: lease lost to another runner", job_id)
                    return
            except Exception as exc:  # the next tick tries again
                LOGGER.warning("job %d: lease not renewed: %s", job_id, type(exc).__name__)
