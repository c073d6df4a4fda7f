"""Reading series into volumes: sorting, spacing, missing slices, feet first, codecs."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from gateway.phantom import make_phantom, write_ct_series
from tests.results.validation import dciodvfy_errors
from workers.inference import SeriesError, read_series


@pytest.fixture(scope="module")
def small_phantom():  # type: ignore[no-untyped-def]
    return make_phantom(11, shape=(12, 64, 80), spacing=(2.0, 0.8, 0.75), n_nodules=0)


def test_sorted_by_position_whatever_the_file_order(small_phantom, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = write_ct_series(small_phantom, tmp_path)
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    vol = read_series(shuffled)
    assert vol.shape == small_phantom.shape
    np.testing.assert_array_equal(vol.hu, small_phantom.hu.astype(np.float32))
    assert vol.slice_spacing == pytest.approx(2.0)
    assert vol.pixel_spacing == pytest.approx((0.8, 0.75))
    assert np.all(np.diff(vol.positions[:, 2]) > 0)
    uids = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in paths]
    assert list(vol.sop_instance_uids) == uids


def test_feet_first_geometry(small_phantom, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = write_ct_series(small_phantom, tmp_path, head_first=False)
    vol = read_series(paths)
    # normal = row x column = (-1,0,0) x (0,1,0) = (0,0,-1): sorted head to feet
    np.testing.assert_allclose(vol.normal, [0, 0, -1])
    assert np.all(np.diff(vol.positions[:, 2]) < 0)
    # stored columns are mirrored; slices reversed
    np.testing.assert_array_equal(vol.hu, small_phantom.hu[::-1, :, ::-1].astype(np.float32))
    # the same voxel maps to the same patient position in both orientations
    hf = read_series(write_ct_series(small_phantom, tmp_path / "hf"))
    k, r, c = 3, 10, 20
    n_z, _, n_x = small_phantom.shape
    p_hf = hf.index_to_patient(np.array([[k, r, c]], float))[0]
    p_ff = vol.index_to_patient(np.array([[n_z - 1 - k, r, n_x - 1 - c]], float))[0]
    np.testing.assert_allclose(p_hf, p_ff, atol=1e-6)
    np.testing.assert_allclose(p_hf, small_phantom.index_to_patient((k, r, c)), atol=1e-4)


def test_missing_slice_is_reported(small_phantom, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = write_ct_series(small_phantom, tmp_path)
    del paths[5]
    with pytest.raises(SeriesError, match=r"1 missing slice\(s\): expected slices every 2\.000"):
        read_series(paths)


def test_duplicate_position_is_reported(small_phantom, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = write_ct_series(small_phantom, tmp_path)
    ds = pydicom.dcmread(paths[4])
    ds.ImagePositionPatient = pydicom.dcmread(paths[3]).ImagePositionPatient
    ds.save_as(paths[4])
    with pytest.raises(SeriesError, match="one image per slice position"):
        read_series(paths)


def test_uneven_spacing_is_reported(small_phantom, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    paths = write_ct_series(small_phantom, tmp_path)
    ds = pydicom.dcmread(paths[6])
    pos = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 0.7]
    ds.save_as(paths[6])
    with pytest.raises(SeriesError, match="uneven slice spacing: expected slices every"):
        read_series(paths)


def test_mixed_series_and_sizes_are_reported(small_phantom, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    a = write_ct_series(small_phantom, tmp_path / "a")
    b = write_ct_series(small_phantom, tmp_path / "b")
    with pytest.raises(SeriesError, match="expected SeriesInstanceUID"):
        read_series([a[0], b[1]])
    with pytest.raises(SeriesError, match="at least one image"):
        read_series([])


@pytest.mark.parametrize("ts", [RLELossless, ImplicitVRLittleEndian])
def test_other_transfer_syntaxes(small_phantom, tmp_path: Path, ts: str) -> None:  # type: ignore[no-untyped-def]
    paths = write_ct_series(small_phantom, tmp_path, transfer_syntax=ts)
    assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == ts
    vol = read_series(paths)
    np.testing.assert_array_equal(vol.hu, small_phantom.hu.astype(np.float32))


@pytest.mark.parametrize(
    "name",
    [
        "MR_small_jp2klossless.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "MR_small_RLE.dcm",
        "CT_small.dcm",
    ],
)
def test_pydicom_test_files_decode(name: str) -> None:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    assert path is not None
    ds = pydicom.dcmread(path)
    assert "ImageOrientationPatient" in ds, f"expected {name} to carry patient geometry"
    vol = read_series([path])
    assert vol.shape == (1, int(ds.Rows), int(ds.Columns))
    assert np.isfinite(vol.hu).all()


def test_written_series_passes_dciodvfy(small_phantom, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    for head_first in (True, False):
        paths = write_ct_series(small_phantom, tmp_path / str(head_first), head_first=head_first)
        iod, errors = dciodvfy_errors(paths[0])  # fails the test if dciodvfy is missing
        assert iod == "CTImage", f"expected dciodvfy to see a CT Image, found {iod!r}"
        assert not errors, errors
