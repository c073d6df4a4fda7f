"""Listener processes: each writes a heartbeat (its AE title, ports and open associations);
the grid judges each row by its age against the interval it promised, and, on this host, by
whether its process still exists (a killed process shows at once, not after the delay)."""

from __future__ import annotations

import multiprocessing
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from gateway.health.heartbeat import ProcessHeartbeat, heartbeats
from gateway.health.status import Level, PartHealth, as_utc, describe_age
from gateway.models import Heartbeat
from gateway.settings import GatewaySettings

if TYPE_CHECKING:  # the web app needs no DICOM server code
    from gateway.dicom.listener import Listener

PART = "listener"
INTERVAL_S = 10.0
AMBER_AFTER_INTERVALS = 2.5  # one beat missed, and some slack for a busy database
RED_AFTER_INTERVALS = 6.0
FORGET_AFTER = timedelta(days=1)  # a slot no longer configured leaves the grid


def listener_heartbeat(
    settings: GatewaySettings,
    engine: Engine,
    listener: Listener,
    alive: Callable[[], bool] | None = None,
    interval_s: float = INTERVAL_S,
) -> ProcessHeartbeat:
    """The heartbeat of this listener process. `alive` defaults to "every server thread
    runs" (a listener that binds its own ports); a process fed by the acceptor passes its
    receiver thread's `is_alive`."""
    process = multiprocessing.current_process().name
    slot = process if process.startswith("listener-") else "listener"

    def serving() -> bool:
        return all(thread.is_alive() for thread in listener.threads)

    def detail() -> dict[str, object]:
        return {
            "ae_title": settings.dicom.ae_title,
            "ports": listener.ports,
            "associations": sum(len(s.active_associations) for s in listener.servers),
        }

    return ProcessHeartbeat(
        engine, part=PART, slot=slot, interval_s=interval_s, detail=detail, alive=alive or serving
    )


def process_running(pid: int) -> bool:
    """Whether `pid` runs on this host; a killed child its parent has not reaped yet is a
    zombie (state Z in /proc) and counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True  # no /proc here: the signal test is all we have
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _process_gone(row: Heartbeat) -> bool:
    """Only answerable on the host that runs the process."""
    return row.hostname == socket.gethostname() and row.pid > 0 and not process_running(row.pid)


def judge(row: Heartbeat, now: datetime) -> PartHealth:
    beat_at = as_utc(row.beat_at)
    age = (now - beat_at).total_seconds()
    detail = row.detail or {}
    facts = (
        ("process", f"{row.hostname} pid {row.pid}"),
        ("AE title", str(detail.get("ae_title", ""))),
        ("ports", ", ".join(str(p) for p in detail.get("ports", []))),
    )
    if row.stopped_at is not None and as_utc(row.stopped_at) >= beat_at:
        level, summary = Level.RED, f"stopped at {as_utc(row.stopped_at):%Y-%m-%d %H:%M:%S}"
    elif _process_gone(row):
        level, summary = Level.RED, f"process {row.pid} is gone"
    elif age > RED_AFTER_INTERVALS * row.interval_seconds:
        level, summary = Level.RED, f"no heartbeat for {describe_age(age)}"
    elif age > AMBER_AFTER_INTERVALS * row.interval_seconds:
        level, summary = Level.AMBER, f"heartbeat late by {describe_age(age)}"
    else:
        associations = int(detail.get("associations", 0))
        level, summary = Level.GREEN, f"receiving: {associations} open associations"
    return PartHealth(PART, row.name, level, summary, beat_at, facts)


def listener_health(engine: Engine, now: datetime) -> list[PartHealth]:
    with engine.connect() as connection:
        rows = [r for r in heartbeats(connection, PART) if now - as_utc(r.beat_at) < FORGET_AFTER]
    if not rows:
        return [
            PartHealth(
                PART,
                "listeners",
                Level.RED,
                "no listener process has written a heartbeat: is `pacs-gateway serve` running?",
                None,
            )
        ]
    return [judge(row, now) for row in rows]
