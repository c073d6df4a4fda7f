"""The prefetch loop: new instance rows (by increasing id, after their commit) of a modality
that a pipeline named by an enabled routing rule takes as a volume are read once, decoded,
rescaled and put on that pipeline's model grids, into the series' cache. A series whose job
has started is left to the worker (it decodes what is missing; both would waste the CPU)."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import pydicom
from sqlalchemy import Engine, func, select

from gateway.audit import utcnow
from gateway.models import Instance, Job, RoutingRule, Series
from gateway.pipelines.description import Preprocess
from gateway.pipelines.registry import PipelineRegistry
from gateway.settings import GatewaySettings
from workers.inference.series import decode_pixels, rescale_of, to_hu
from workers.prefetch.cache import SeriesCache, sweep
from workers.prefetch.grids import grid_key, slice_grid

LOGGER = logging.getLogger(__name__)
BATCH = 16  # instances per look: a burst that starts meanwhile is seen within one batch
TARGETS_REFRESH_S = 30.0
SWEEP_INTERVAL_S = 60.0


@dataclass(frozen=True)
class NewInstance:
    id: int
    sop_instance_uid: str
    file_path: str
    series_instance_uid: str
    modality: str


def volume_targets(
    settings: GatewaySettings, registry: PipelineRegistry, pipelines: Sequence[str]
) -> dict[str, tuple[Preprocess, ...]]:
    """Modality -> the distinct model grids of the named pipelines that take it as a volume
    (with the site's series selection, as the job applies it)."""
    grids: dict[str, dict[str, Preprocess]] = {}
    for name in pipelines:
        if name not in registry:
            continue
        description = registry.get(name).description
        selection = description.accepts.series_selection().overridden_by(
            settings.routing.series_selection
        )
        if selection.geometry != "volume":
            continue
        for modality in selection.modalities:
            found = grids.setdefault(modality.upper(), {})
            if settings.prefetch.grids:
                for model in description.models:
                    if model.preprocess.method == "window":
                        found[grid_key(model.preprocess)] = model.preprocess
    return {modality: tuple(found.values()) for modality, found in grids.items()}


class Prefetcher:
    def __init__(self, settings: GatewaySettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.registry = settings.pipeline_registry()
        self.last_id = self._start_id()
        self._targets: dict[str, tuple[Preprocess, ...]] = {}
        self._targets_at = -TARGETS_REFRESH_S
        self.prefetched = 0
        self._newest: tuple[int, float] | None = None  # (newest instance id, when seen)
        self.ingest_busy()  # the first look: a burst under way at start is seen at once

    def _start_id(self) -> int:
        """Just before the instances received within `lookback_s` (a restart mid-series)."""
        since = utcnow() - timedelta(seconds=self.settings.prefetch.lookback_s)
        with self.engine.connect() as connection:
            first = connection.execute(
                select(func.min(Instance.id)).where(Instance.received_at >= since)
            ).scalar()
            if first is not None:
                return int(first) - 1
            return int(connection.execute(select(func.max(Instance.id))).scalar() or 0)

    def targets(self) -> dict[str, tuple[Preprocess, ...]]:
        now = time.monotonic()
        if now - self._targets_at >= TARGETS_REFRESH_S:
            with self.engine.connect() as connection:
                rows = connection.execute(
                    select(RoutingRule.pipeline, RoutingRule.shadow_pipeline).where(
                        RoutingRule.enabled.is_(True)
                    )
                ).all()
            names = sorted({n for row in rows for n in row if n})
            self._targets = volume_targets(self.settings, self.registry, names)
            self._targets_at = now
        return self._targets

    def _new_instances(self) -> tuple[list[NewInstance], int]:
        """The instances committed after `last_id` whose series has no started job, and the
        last id looked at."""
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(
                    Instance.id,
                    Instance.sop_instance_uid,
                    Instance.file_path,
                    Series.series_instance_uid,
                    Series.modality,
                )
                .join(Series, Instance.series_id == Series.id)
                .where(Instance.id > self.last_id)
                .order_by(Instance.id)
                .limit(BATCH)
            ).all()
            series = {r.series_instance_uid for r in rows}
            started = set(
                connection.execute(
                    select(Job.series_instance_uid).where(
                        Job.series_instance_uid.in_(series), Job.started_at.is_not(None)
                    )
                ).scalars()
            )
        fresh = [
            NewInstance(r.id, r.sop_instance_uid, r.file_path, r.series_instance_uid, r.modality)
            for r in rows
            if r.series_instance_uid not in started
        ]
        return fresh, rows[-1].id if rows else self.last_id

    def ingest_busy(self) -> bool:
        """Whether instances arrive faster than `prefetch.defer_above_per_s` since the last
        look: a sender at full speed, whose listener needs the CPUs (on two cores, even an
        idle-class prefetcher slowed such a send by 8 %). The burst is prefetched once it
        ends; a modality sending as it reconstructs is prefetched as it goes."""
        with self.engine.connect() as connection:
            newest = int(connection.execute(select(func.max(Instance.id))).scalar() or 0)
        now = time.monotonic()
        previous, self._newest = self._newest, (newest, now)
        if previous is None or now <= previous[1]:
            return False
        rate = (newest - previous[0]) / (now - previous[1])
        return rate > self.settings.prefetch.defer_above_per_s

    def poll_once(self) -> int:
        """Prefetch the instances committed since the last call (none while a burst is
        arriving); returns how many rows were looked at (0: nothing done)."""
        if self.ingest_busy():
            return 0
        rows, last_id = self._new_instances()
        seen = last_id - self.last_id
        targets = self.targets() if rows and self._room() else {}
        for row in rows:
            grids = targets.get((row.modality or "").upper())
            if grids is not None:
                self.prefetch(row, grids)
        self.last_id = last_id
        return seen

    def _room(self) -> bool:
        """Room on the disk: the cache never takes what the spool needs (it stops at twice
        the listener's free-space floor, `storage.min_free_mb`)."""
        free = shutil.disk_usage(self.settings.data_dir).free
        if free >= 2 * self.settings.storage.min_free_mb * 2**20:
            return True
        LOGGER.warning("prefetch paused: %d MiB free on the data disk", free // 2**20)
        return False

    def prefetch(self, row: NewInstance, grids: Sequence[Preprocess]) -> bool:
        """One instance into its series' cache; False when it is not a slice the volume
        reader takes (the worker then reports why) or its file changed meanwhile."""
        path = self.settings.spool_dir / row.file_path
        cache = SeriesCache(self.settings.data_dir, row.series_instance_uid)
        try:
            if cache.holds(path, row.sop_instance_uid):
                return True
            stat = path.stat()
            ds = pydicom.dcmread(path)
            if "PixelData" not in ds or int(ds.get("NumberOfFrames", 1) or 1) != 1:
                return False
            if str(ds.get("SOPInstanceUID", "")) != row.sop_instance_uid:
                return False
            spacing = ds.get("PixelSpacing")
            if spacing is None or len(spacing) != 2:
                return False
            pixel_spacing = (float(spacing[0]), float(spacing[1]))
            stored = decode_pixels(ds, path.name)
            rescale = rescale_of(ds)
            hu = to_hu(stored, rescale)
            made = {grid_key(p): slice_grid(hu, pixel_spacing, p) for p in grids}
            if path.stat().st_mtime_ns != stat.st_mtime_ns:
                return False
            cache.write(path, row.sop_instance_uid, stat, stored, rescale, pixel_spacing, made)
        except Exception as exc:  # one bad instance never stops the loop
            LOGGER.info("prefetch of instance %d skipped: %s", row.id, type(exc).__name__)
            return False
        self.prefetched += 1
        return True

    def run(self, stop: threading.Event, alive: Callable[[], bool] = lambda: True) -> None:
        """Poll until `stop` is set (or `alive` says the parent has gone); sweep old caches."""
        interval = self.settings.prefetch.poll_interval_s
        swept_at = -SWEEP_INTERVAL_S
        while not stop.is_set() and alive():
            if time.monotonic() - swept_at >= SWEEP_INTERVAL_S:
                sweep(self.settings.data_dir, self.settings.prefetch.max_age_s)
                swept_at = time.monotonic()
            try:
                busy = self.poll_once()
            except Exception as exc:  # the database away for a moment: try again
                LOGGER.warning("prefetch poll failed: %s: %s", type(exc).__name__, exc)
                busy = 0
            if not busy:
                stop.wait(interval)
