"""What a health check found about one part: a level, one line saying why, and when the part
was last seen working."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import UTC, datetime


class Level(enum.StrEnum):
    GREEN = "green"  # working
    AMBER = "amber"  # working, but needs a look (late, slow, filling, failing now and then)
    RED = "red"  # not working: studies or results wait or are refused

    @property
    def code(self) -> int:
        """0, 1, 2: the Prometheus gauge's value."""
        return list(Level).index(self)


@dataclass(frozen=True)
class PartHealth:
    part: str  # listener, workers, worker, triton, model, broker, database, destination, spool
    name: str
    level: Level
    summary: str
    heartbeat_at: datetime | None  # the part's last sign of life; None: never seen
    detail: tuple[tuple[str, str], ...] = field(default=())


def as_utc(value: datetime) -> datetime:
    """SQLite gives naive UTC values back; PostgreSQL aware ones."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def seconds_since(value: datetime | None, now: datetime) -> float | None:
    return None if value is None else (now - as_utc(value)).total_seconds()


def describe_age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
