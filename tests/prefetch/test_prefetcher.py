"""What the prefetcher takes (instances of a modality that an enabled rule's pipeline takes as
a volume, of a series whose job has not started), in its own niced process; the cache's
files (permissions, torn entries) and its sweep by age."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import numpy as np
import psutil
import pydicom
from sqlalchemy import Engine, update

from gateway.audit import utcnow
from gateway.models import Job, RoutingRule
from gateway.phantom import make_phantom, write_ct_series
from tests.conftest import RunningGateway
from tests.prefetch.conftest import drain, make_job, send_ct
from tests.scu import send_files
from workers.inference.series import SeriesFile
from workers.prefetch.cache import SeriesCache, cache_root, sweep
from workers.prefetch.prefetcher import Prefetcher
from workers.prefetch.process import prefetching


def cached(settings_data_dir: Path, series_uid: str) -> list[Path]:
    return sorted(SeriesCache(settings_data_dir, series_uid).directory.glob("*.slice"))


def test_only_series_a_rule_could_run_and_no_job_has_started(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    settings = gateway.settings
    prefetcher = Prefetcher(settings, engine)
    # an MR series: the rule's pipeline (lung_nodules) takes CT only
    phantom = make_phantom(3, shape=(6, 64, 64), spacing=(2.5, 6.0, 6.0), n_nodules=0)
    mr = write_ct_series(phantom, tmp_path / "mr")
    for path in mr:
        ds = pydicom.dcmread(path)
        ds.Modality = "MR"
        ds.save_as(path)
    assert send_files(gateway.port, mr) == [0] * len(mr)
    # a CT series whose job has started: the worker decodes what it lacks
    started = send_ct(gateway.port, tmp_path / "started", seed=31, slices=4)
    job_id = make_job(engine, started, 1)
    with engine.begin() as connection:
        connection.execute(update(Job).where(Job.id == job_id).values(started_at=utcnow()))
    taken = send_ct(gateway.port, tmp_path / "taken", seed=32, slices=4)
    drain(prefetcher, engine)
    mr_series = str(pydicom.dcmread(mr[0], stop_before_pixels=True).SeriesInstanceUID)
    assert cached(settings.data_dir, mr_series) == []
    assert cached(settings.data_dir, started.series_instance_uid) == []
    assert len(cached(settings.data_dir, taken.series_instance_uid)) == 4

    # the rule disabled: its pipeline's series are no longer prefetched
    with engine.begin() as connection:
        connection.execute(update(RoutingRule).values(enabled=False))
    late = Prefetcher(settings, engine)
    late.last_id = prefetcher.last_id
    later = send_ct(gateway.port, tmp_path / "later", seed=33, slices=4)
    drain(late, engine)
    assert cached(settings.data_dir, later.series_instance_uid) == []

    # a nearly full disk: the cache leaves the room to the spool
    with engine.begin() as connection:
        connection.execute(update(RoutingRule).values(enabled=True))
    full = settings.model_copy(
        update={"storage": settings.storage.model_copy(update={"min_free_mb": 2**40})}
    )
    crowded = Prefetcher(full, engine)
    crowded.last_id = late.last_id
    last = send_ct(gateway.port, tmp_path / "last", seed=35, slices=4)
    drain(crowded, engine)
    assert cached(settings.data_dir, last.series_instance_uid) == []


def test_the_process_beside_serve_fills_the_cache_at_low_priority(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    settings = gateway.settings
    with prefetching(settings) as process:
        assert process is not None
        sent = send_ct(gateway.port, tmp_path / "ct", seed=34, slices=6)
        process.wait_caught_up(engine, 60)
        child = psutil.Process(process.process.pid)
        assert child.nice() == settings.prefetch.nice == 10
        assert os.sched_getscheduler(child.pid) == os.SCHED_IDLE
        assert child.ionice().ioclass == psutil.IOPRIO_CLASS_IDLE
        entries = cached(settings.data_dir, sent.series_instance_uid)
        assert len(entries) == 6
    assert not process.process.is_alive()
    folder = entries[0].parent
    # pixel data (PHI): the spool's permissions, nobody else's
    assert stat.S_IMODE(entries[0].stat().st_mode) == 0o640
    assert stat.S_IMODE(folder.stat().st_mode) & 0o007 == 0
    assert folder.parent == cache_root(settings.data_dir)
    off = settings.model_copy(
        update={"prefetch": settings.prefetch.model_copy(update={"enabled": False})}
    )
    with prefetching(off) as nothing:
        assert nothing is None


def test_a_torn_entry_is_ignored_and_old_folders_are_swept(tmp_path: Path) -> None:
    source = tmp_path / "spool" / "x.dcm"
    source.parent.mkdir()
    source.write_bytes(b"x" * 100)
    cache = SeriesCache(tmp_path / "data", "1.2.3")
    grids = {"g": np.ones((4, 4), np.float32)}
    stored = np.arange(16, dtype=np.int16).reshape(4, 4)
    entry = cache.write(source, "1.2.3.4", source.stat(), stored, (1.0, -1024.0), (0.5, 0.5), grids)
    found = cache.lookup(SeriesFile(source, "1.2.3.4"))
    assert found is not None
    np.testing.assert_array_equal(found.stored, stored)
    np.testing.assert_array_equal(found.grids["g"], grids["g"])
    assert (found.rescale, found.pixel_spacing) == ((1.0, -1024.0), (0.5, 0.5))
    assert cache.lookup(SeriesFile(source, "1.2.3.5")) is None  # another instance
    entry.write_bytes(entry.read_bytes()[:200])  # a crash mid-write
    assert cache.lookup(SeriesFile(source, "1.2.3.4")) is None

    fresh = SeriesCache(tmp_path / "data", "1.2.4")
    fresh.write(source, "1.2.4.1", source.stat(), stored, (1.0, 0.0), (0.5, 0.5), {})
    old = time.time() - 7200
    os.utime(cache.directory, (old, old))
    assert sweep(tmp_path / "data", max_age_s=3600) == 1
    assert not cache.directory.exists() and fresh.directory.is_dir()


def test_a_burst_is_prefetched_once_it_has_ended(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    """Instances arriving faster than prefetch.defer_above_per_s leave the CPUs to the
    listener; the prefetcher takes them when the rate drops."""
    settings = gateway.settings
    prefetcher = Prefetcher(settings, engine)
    sent = send_ct(gateway.port, tmp_path / "ct", seed=36, slices=6)
    newest = prefetcher.last_id + 6
    limit = settings.prefetch.defer_above_per_s
    # as seen at the previous look, one second ago: 6 instances more than the limit allows
    prefetcher._newest = (newest - int(limit) - 6, time.monotonic() - 1.0)
    assert prefetcher.poll_once() == 0
    assert cached(settings.data_dir, sent.series_instance_uid) == []
    # a second later, nothing new: the burst has ended
    prefetcher._newest = (newest, time.monotonic() - 1.0)
    drain(prefetcher, engine)
    assert len(cached(settings.data_dir, sent.series_instance_uid)) == 6
