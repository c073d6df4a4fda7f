"""Heartbeat rows (`heartbeats` table): a process writes its own every few seconds
(`ProcessHeartbeat`), the health grid records the parts it found answering (`record_seen`).
A process that dies leaves its row behind with an old `beat_at`: that is how the grid tells
a dead process from a live one, in every web process and host at once."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.audit import utcnow
from gateway.models import Heartbeat

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class Beat:
    name: str
    part: str
    hostname: str
    pid: int
    interval_seconds: float
    detail: dict[str, Any] | None


def upsert(connection: Connection, beat: Beat, now: datetime, *, started: bool = False) -> None:
    """Write `beat` as the row named `beat.name`: its time, detail, and (`started`) a new
    start. Two writers inserting the same new name at once: the loser updates."""
    values: dict[str, Any] = {
        "part": beat.part,
        "hostname": beat.hostname,
        "pid": beat.pid,
        "interval_seconds": beat.interval_seconds,
        "detail": beat.detail,
        "beat_at": now,
    }
    if started:
        values.update(started_at=now, stopped_at=None)
    statement = update(Heartbeat).where(Heartbeat.name == beat.name).values(**values)
    if connection.execute(statement).rowcount:
        return
    try:
        with connection.begin_nested():
            connection.execute(
                insert(Heartbeat).values(
                    **{"started_at": now, "stopped_at": None, **values, "name": beat.name}
                )
            )
    except IntegrityError:
        connection.execute(statement)


def record_seen(engine: Engine, beats: Sequence[Beat], now: datetime | None = None) -> None:
    """Record that the health grid found these parts answering (one transaction)."""
    if not beats:
        return
    now = now or utcnow()
    with engine.begin() as connection:
        for beat in beats:
            upsert(connection, beat, now)


def heartbeats(connection: Connection, part: str) -> list[Heartbeat]:
    """The rows of one kind of part, by name (loaded, usable after the connection closes)."""
    with Session(bind=connection) as session:
        return list(
            session.scalars(
                select(Heartbeat).where(Heartbeat.part == part).order_by(Heartbeat.name)
            ).all()
        )


class ProcessHeartbeat:
    """This process's row, written every `interval_s` while `alive()` holds; on a clean stop
    the row says when it stopped. A failed write is logged (once per run of failures) and
    tried again next time: the database being away must not stop the process."""

    def __init__(
        self,
        engine: Engine,
        *,
        part: str,
        slot: str,
        interval_s: float,
        detail: Callable[[], dict[str, Any]],
        alive: Callable[[], bool],
    ) -> None:
        hostname = socket.gethostname()
        self.engine = engine
        self.interval_s = interval_s
        self.detail = detail
        self.alive = alive
        self.beat = Beat(
            name=f"{hostname}/{slot}"[:128],
            part=part,
            hostname=hostname,
            pid=os.getpid(),
            interval_seconds=interval_s,
            detail=None,
        )

    def write(self, *, started: bool = False) -> None:
        beat = Beat(**{**self.beat.__dict__, "detail": self.detail()})
        with self.engine.begin() as connection:
            upsert(connection, beat, utcnow(), started=started)

    def mark_stopped(self) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(Heartbeat)
                .where(Heartbeat.name == self.beat.name, Heartbeat.pid == self.beat.pid)
                .values(stopped_at=utcnow())
            )

    def run(self, stop: threading.Event) -> None:
        started, failing = True, False
        while True:
            try:
                if self.alive():
                    self.write(started=started)
                    started, failing = False, False
            except Exception as exc:  # the next beat tries again
                if not failing:
                    LOGGER.warning("heartbeat %s not written: %s", self.beat.name, exc)
                failing = True
            if stop.wait(self.interval_s):
                break
        try:
            self.mark_stopped()
        except Exception as exc:
            LOGGER.warning("heartbeat %s: stop not recorded: %s", self.beat.name, exc)

    def thread(self, stop: threading.Event) -> threading.Thread:
        """Not started yet: for a caller that starts and joins its threads together."""
        return threading.Thread(
            target=self.run, args=(stop,), name=f"heartbeat-{self.beat.part}", daemon=True
        )

    def start(self, stop: threading.Event) -> threading.Thread:
        thread = self.thread(stop)
        thread.start()
        return thread


def last_seen(engine: Engine, part: str) -> dict[str, datetime]:
    """When each recorded part of this kind last answered, by name."""
    with engine.connect() as connection:
        return {row.name: row.beat_at for row in heartbeats(connection, part)}
