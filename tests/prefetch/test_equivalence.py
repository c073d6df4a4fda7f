"""The prefetch cache changes nothing but the time: a job that takes its slices from the cache
finds what a job reading the files finds (same labels, same measurements, same SEG); a slice
whose file changed after it was cached (rewritten, or re-sent with the same SOP Instance UID
after its file went missing) is decoded from the file; a missing cache is no error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from sqlalchemy import Engine, select

from gateway.models import AuditEvent, Instance, Job, JobState, Series
from gateway.settings import GatewaySettings
from tests.conftest import RunningGateway
from tests.prefetch.conftest import drain, make_job, send_ct
from tests.scu import send_files
from workers.inference.declared import to_grid
from workers.inference.series import SeriesFile, load_series, read_series
from workers.jobs.findings_store import generic, load_findings
from workers.jobs.runner import JobRunner
from workers.prefetch.cache import SeriesCache
from workers.prefetch.grids import grid_key, model_grid
from workers.prefetch.prefetcher import Prefetcher


def prefetch_all(settings: GatewaySettings, engine: Engine) -> Prefetcher:
    prefetcher = Prefetcher(settings, engine)
    drain(prefetcher, engine)
    return prefetcher


def series_files(settings: GatewaySettings, engine: Engine, series_uid: str) -> list[SeriesFile]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Instance.file_path, Instance.sop_instance_uid)
            .join(Series, Instance.series_id == Series.id)
            .where(Series.series_instance_uid == series_uid)
        ).all()
    return [SeriesFile(settings.spool_dir / path, uid) for path, uid in rows]


def inferred_detail(engine: Engine, job_id: int) -> dict[str, object]:
    with engine.connect() as connection:
        details = connection.execute(
            select(AuditEvent.detail).where(AuditEvent.kind == "job.inferred")
        ).scalars()
        (detail,) = [d for d in details if d and d.get("job") == job_id]
    return dict(detail)


def seg_pixels(settings: GatewaySettings, engine: Engine, job_id: int) -> np.ndarray:
    with engine.connect() as connection:
        summary = connection.execute(select(Job.summary).where(Job.id == job_id)).scalar_one()
    (seg,) = [r for r in summary["results"] if r["kind"] == "seg"]
    return np.asarray(pydicom.dcmread(settings.results_dir / seg["relative_path"]).pixel_array)


def test_findings_from_the_cache_equal_those_from_the_files(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    settings = gateway.settings
    sent = send_ct(gateway.port, tmp_path / "ct")
    prefetch_all(settings, engine)
    cache = SeriesCache(settings.data_dir, sent.series_instance_uid)
    assert len(list(cache.directory.glob("*.slice"))) == len(sent.paths)

    from_files = make_job(engine, sent, 1)
    from_cache = make_job(engine, sent, 2)
    off = settings.model_copy(
        update={"prefetch": settings.prefetch.model_copy(update={"enabled": False})}
    )
    runner = JobRunner(off, engine)
    try:
        assert runner.run(from_files).state == JobState.DELIVERED
    finally:
        runner.close()
    # the other job of the series still waits: its cache stays
    assert cache.directory.is_dir()
    runner = JobRunner(settings, engine)
    try:
        assert runner.run(from_cache).state == JobState.DELIVERED
    finally:
        runner.close()
    assert inferred_detail(engine, from_files)["prefetched_slices"] == 0
    assert inferred_detail(engine, from_cache)["prefetched_slices"] == len(sent.paths)
    assert not cache.directory.exists(), "expected the cache removed once results were built"

    a = generic(load_findings(settings.jobs_dir / str(from_files) / "findings.npz"))
    b = generic(load_findings(settings.jobs_dir / str(from_cache) / "findings.npz"))
    assert a.segments, "expected the phantom's lungs and nodules found"
    assert any(s.name.lower().startswith("nodule") for s in a.segments), a.segments
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.segments == b.segments
    assert a.image_findings == b.image_findings
    np.testing.assert_array_equal(
        seg_pixels(settings, engine, from_files), seg_pixels(settings, engine, from_cache)
    )


def test_the_volume_and_grids_from_the_cache_are_those_of_the_files(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    settings = gateway.settings
    sent = send_ct(gateway.port, tmp_path / "ct", seed=22, slices=12)
    prefetch_all(settings, engine)
    files = series_files(settings, engine, sent.series_instance_uid)
    cache = SeriesCache(settings.data_dir, sent.series_instance_uid)
    loaded = load_series(files, cache)
    assert loaded.prefetched == len(files)
    reference = read_series(f.path for f in files)
    np.testing.assert_array_equal(loaded.volume.hu, reference.hu)
    assert loaded.volume.sop_instance_uids == reference.sop_instance_uids
    description = settings.pipeline_registry().get("lung_nodules").description
    for model in description.models:
        p = model.preprocess
        cached = loaded.volume.grids[grid_key(p)]
        assert all(g is not None for g in cached), f"expected every {model.key} slice cached"
        # bit for bit: the grid made per slice in the prefetcher is the one of the volume
        np.testing.assert_array_equal(
            model_grid(loaded.volume, p), to_grid(reference.hu, reference.pixel_spacing, p)
        )
    # the headers for the results carry no pixel data, and every file's
    assert len(loaded.headers) == len(files)
    assert all("PixelData" not in ds for ds in loaded.headers)


def _brighter(path: Path, out: Path, by: int) -> Path:
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    ds.PixelData = (pixels + by).astype(pixels.dtype).tobytes()
    ds.save_as(out, enforce_file_format=True)
    return out


def test_a_changed_file_is_decoded_again_and_no_cache_is_no_error(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    settings = gateway.settings
    sent = send_ct(gateway.port, tmp_path / "ct", seed=23, slices=10)
    prefetch_all(settings, engine)
    files = series_files(settings, engine, sent.series_instance_uid)
    cache = SeriesCache(settings.data_dir, sent.series_instance_uid)
    by_uid = {f.sop_instance_uid: f for f in files}
    first, second = (pydicom.dcmread(p, stop_before_pixels=True) for p in sent.paths[3:5])

    # 1. A spool file rewritten in place (same path, same UID, other pixels).
    rewritten = by_uid[str(first.SOPInstanceUID)].path
    _brighter(rewritten, rewritten, 7)
    # 2. A file gone, and the instance re-sent with other pixels: the new copy is stored
    # (under the name that became free: same name and size, a new file).
    by_uid[str(second.SOPInstanceUID)].path.unlink()
    resent = _brighter(sent.paths[4], tmp_path / "resent.dcm", 11)
    assert send_files(gateway.port, [resent]) == [0]
    files = series_files(settings, engine, sent.series_instance_uid)
    assert all(f.path.is_file() for f in files)

    loaded = load_series(files, cache)
    assert loaded.prefetched == len(files) - 2
    reference = read_series(f.path for f in files)
    np.testing.assert_array_equal(loaded.volume.hu, reference.hu)
    for uid, by in ((str(first.SOPInstanceUID), 7), (str(second.SOPInstanceUID), 11)):
        k = loaded.volume.sop_instance_uids.index(uid)
        original = read_series([sent.paths[3 if by == 7 else 4]]).hu[0]
        np.testing.assert_array_equal(loaded.volume.hu[k], original + by)
        for grids in loaded.volume.grids.values():
            assert grids[k] is None, "expected the stale grid slice dropped"

    # 3. No cache at all: the files alone.
    cache.remove()
    again = load_series(files, cache)
    assert again.prefetched == 0
    np.testing.assert_array_equal(again.volume.hu, reference.hu)
