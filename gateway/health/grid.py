"""The health grid: every part checked at once (each check has its own timeout; one that
raises is shown red with the error instead of hiding the others), then the parts found
answering are recorded as seen, so a part that stops later is shown with its last time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from gateway.audit import utcnow
from gateway.health.broker import broker_health
from gateway.health.database import database_health
from gateway.health.destinations import destination_health
from gateway.health.heartbeat import Beat, record_seen
from gateway.health.listeners import listener_health
from gateway.health.spool import spool_health
from gateway.health.status import Level, PartHealth
from gateway.health.triton import triton_health
from gateway.health.workers import judge_replies, worker_health
from gateway.settings import GatewaySettings
from gateway.web import probes

LOGGER = logging.getLogger(__name__)

# Display order and headings.
PARTS: dict[str, str] = {
    "listener": "Listener processes",
    "worker": "Workers",
    "broker": "Broker",
    "triton": "Triton",
    "model": "Models",
    "database": "Database",
    "destination": "Destinations",
    "spool": "Spool disk",
}

Checked = tuple[list[PartHealth], list[Beat]]


@dataclass(frozen=True)
class HealthGrid:
    parts: list[PartHealth]
    checked_at: datetime

    def of(self, part: str) -> list[PartHealth]:
        return [p for p in self.parts if p.part == part]

    @property
    def sections(self) -> list[tuple[str, list[PartHealth]]]:
        return [(title, self.of(part)) for part, title in PARTS.items() if self.of(part)]

    def count(self, level: Level) -> int:
        return sum(1 for p in self.parts if p.level is level)

    @property
    def worst(self) -> Level:
        return max((p.level for p in self.parts), key=lambda level: level.code, default=Level.GREEN)


def _broker_and_workers(
    settings: GatewaySettings, engine: Engine, url: str, now: datetime
) -> Checked:
    broker, beat = broker_health(settings, engine, url, now)
    beats = [beat] if beat is not None else []
    if broker.level is Level.RED:
        rows, _ = judge_replies(
            settings, engine, [], now, no_reply="unknown: the broker does not answer"
        )
    else:
        rows, worker_beats = worker_health(settings, engine, url, now)
        beats += worker_beats
    return [*rows, broker], beats


def _rows(check: Callable[[], list[PartHealth] | PartHealth]) -> Callable[[], Checked]:
    def run() -> Checked:
        found = check()
        return (found if isinstance(found, list) else [found]), []

    return run


def collect(settings: GatewaySettings, engine: Engine, now: datetime | None = None) -> HealthGrid:
    now = now or utcnow()
    url = probes.broker_url(settings)
    checks: dict[str, Callable[[], Checked]] = {
        "listener": _rows(lambda: listener_health(engine, now)),
        "worker": lambda: _broker_and_workers(settings, engine, url, now),
        "triton": lambda: triton_health(settings, engine, now),
        "database": _rows(lambda: database_health(settings, engine, now)),
        "destination": _rows(lambda: destination_health(engine, now)),
        "spool": _rows(lambda: spool_health(settings, now)),
    }
    parts: list[PartHealth] = []
    beats: list[Beat] = []
    with ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="health") as pool:
        futures = {part: pool.submit(check) for part, check in checks.items()}
        for part, future in futures.items():
            try:
                rows, seen = future.result()
            except Exception as exc:
                LOGGER.warning("health check of %s failed: %s", part, exc)
                rows = [
                    PartHealth(part, part, Level.RED, f"check failed: {type(exc).__name__}", None)
                ]
                seen = []
            parts += rows
            beats += seen
    try:
        record_seen(engine, beats, now)
    except Exception as exc:  # the database part shows why
        LOGGER.warning("health: parts seen not recorded: %s", exc)
    order = list(PARTS)
    parts.sort(key=lambda p: order.index(p.part) if p.part in order else len(order))
    return HealthGrid(parts, now)
