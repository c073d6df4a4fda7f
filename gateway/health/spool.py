"""The spool's file system: free space against `storage.min_free_mb`, below which the
listener answers C-STORE with 0xA700 (out of resources)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gateway.health.status import Level, PartHealth
from gateway.settings import GatewaySettings

PART = "spool"
AMBER_USED_FRACTION = 0.9
AMBER_FREE_FACTOR = 2  # amber while free space is under twice the threshold


@dataclass(frozen=True)
class SpoolUsage:
    path: Path  # the folder measured: the spool, or its nearest existing parent
    total_bytes: int
    free_bytes: int
    min_free_bytes: int

    @property
    def used_fraction(self) -> float:
        return 1 - self.free_bytes / self.total_bytes if self.total_bytes else 0.0


def spool_usage(settings: GatewaySettings) -> SpoolUsage:
    path = settings.spool_dir.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return SpoolUsage(path, usage.total, usage.free, settings.storage.min_free_mb * 1024 * 1024)


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:,.0f} MB"


def judge(usage: SpoolUsage, now: datetime) -> PartHealth:
    facts = (
        ("folder", str(usage.path)),
        ("free", _mb(usage.free_bytes)),
        ("threshold", _mb(usage.min_free_bytes)),
        ("used", f"{usage.used_fraction:.0%}"),
    )
    free, threshold = usage.free_bytes, usage.min_free_bytes
    if free < threshold:
        level = Level.RED
        summary = f"{_mb(free)} free, under the {_mb(threshold)} threshold: C-STORE is refused"
    elif free < AMBER_FREE_FACTOR * threshold or usage.used_fraction >= AMBER_USED_FRACTION:
        level = Level.AMBER
        summary = f"filling: {_mb(free)} free ({usage.used_fraction:.0%} used)"
    else:
        level = Level.GREEN
        summary = f"{_mb(free)} free ({usage.used_fraction:.0%} used)"
    return PartHealth(PART, "spool", level, summary, now, facts)


def spool_health(settings: GatewaySettings, now: datetime) -> PartHealth:
    return judge(spool_usage(settings), now)
