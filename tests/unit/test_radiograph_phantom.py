"""Synthetic chest radiographs: projection geometry, photometric inversion, DX/CR files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gateway.phantom.radiograph import (
    Geometry,
    chest_phantom,
    detector_grid,
    line_integrals,
    make_radiograph,
    project_nodules,
)
from gateway.phantom.radiograph_dicom import write_radiograph
from tests.results.validation import dciodvfy_errors, read_strict

SEED = 15001


@pytest.mark.parametrize(("view", "mirrored", "sid"), [("PA", False, 1800.0), ("AP", True, 1000.0)])
def test_projected_nodule_centre_matches_ground_truth(
    view: str, mirrored: bool, sid: float
) -> None:
    with_nodule = chest_phantom(SEED, n_nodules=1, nodule_diameter_mm=(20.0, 20.0))
    without = chest_phantom(SEED, n_nodules=0)  # same phantom: nodules are drawn last
    (nodule,) = with_nodule.nodules
    geometry = Geometry(
        view_position=view,  # type: ignore[arg-type]
        source_to_detector_mm=sid,
        detector_gap_mm=30.0,
        central_ray_mm=(8.0, -12.0),
        rows=2000,
        columns=1800,
        spacing_mm=0.2,
        mirrored=mirrored,
    )
    diff = line_integrals(with_nodule, geometry) - line_integrals(without, geometry)
    assert diff.max() > 0.1, "the nodule should add attenuation"
    weights = np.where(diff > 0.5 * diff.max(), diff, 0.0)
    g_rows, g_cols, step = detector_grid(geometry)
    i = (weights.sum(axis=1) @ np.arange(g_rows)) / weights.sum()
    j = (weights.sum(axis=0) @ np.arange(g_cols)) / weights.sum()
    seen_row = (geometry.rows - 1) / 2 + (i - (g_rows - 1) / 2) * step / geometry.spacing_mm
    seen_col = (geometry.columns - 1) / 2 + (j - (g_cols - 1) / 2) * step / geometry.spacing_mm
    (truth,) = project_nodules(with_nodule, geometry)
    error_mm = np.hypot(seen_row - truth.row, seen_col - truth.column) * geometry.spacing_mm
    assert error_mm < 1.5, (seen_row, seen_col, truth)
    # the side of the image follows the patient's side: +x (left) is on the right unless mirrored
    x_patient = with_nodule.index_to_patient(nodule.center_index)[0]
    right_half = truth.column > (geometry.columns - 1) / 2 + 8.0 / geometry.spacing_mm
    assert right_half == ((x_patient > 8.0) != mirrored)
    assert truth.magnification > 1.0
    assert truth.radius_px == pytest.approx(10.0 * truth.magnification / 0.2)


def test_ap_magnifies_more_than_pa() -> None:
    pa = make_radiograph(SEED, view_position="PA", long_side_px=400, n_nodules=1)
    ap = make_radiograph(SEED, view_position="AP", long_side_px=400, n_nodules=1)
    assert 1.0 < pa.magnification < 1.15 < ap.magnification < 1.4


def test_monochrome1_is_the_inverse_of_monochrome2() -> None:
    m1 = make_radiograph(SEED, photometric="MONOCHROME1", long_side_px=500)
    m2 = make_radiograph(SEED, photometric="MONOCHROME2", long_side_px=500)
    assert m1.exposure.bits_stored == m2.exposure.bits_stored
    np.testing.assert_array_equal(
        m1.pixels.astype(np.int32), m2.max_value - m2.pixels.astype(np.int32)
    )
    # MONOCHROME2: the mediastinum (bright) above the lungs (dark) in the middle row
    row = m2.pixels[m2.geometry.rows // 2].astype(float)
    centre = row[len(row) // 2 - 10 : len(row) // 2 + 10].mean()
    assert centre > np.percentile(row, 30) + 0.1 * m2.max_value


def test_same_seed_same_radiograph() -> None:
    a = make_radiograph(SEED + 1, long_side_px=300)
    b = make_radiograph(SEED + 1, long_side_px=300)
    c = make_radiograph(SEED + 2, long_side_px=300)
    np.testing.assert_array_equal(a.pixels, b.pixels)
    assert a.nodules == b.nodules and a.geometry == b.geometry
    assert a.pixels.shape != c.pixels.shape or not np.array_equal(a.pixels, c.pixels)


def test_default_sizes_are_those_of_detectors() -> None:
    for seed in range(SEED, SEED + 6):
        g = make_radiograph(seed, n_nodules=0).geometry
        assert 1024 <= max(g.rows, g.columns) <= 2500
        assert 0.139 <= g.spacing_mm <= 0.42
        assert max(g.rows, g.columns) * g.spacing_mm == pytest.approx(430.0, abs=0.5)


@pytest.mark.parametrize(
    ("modality", "photometric", "iod"),
    [
        ("DX", "MONOCHROME1", "DXImageForPresentation"),
        ("DX", "MONOCHROME2", "DXImageForPresentation"),
        ("CR", "MONOCHROME1", "CRImage"),
    ],
)
def test_written_radiograph_is_valid_dicom(
    tmp_path: Path, modality: str, photometric: str, iod: str
) -> None:
    rad = make_radiograph(SEED, photometric=photometric, long_side_px=600, view_position="AP")  # type: ignore[arg-type]
    path = write_radiograph(rad, tmp_path / "xr.dcm", modality=modality)  # type: ignore[arg-type]
    ds = read_strict(path)
    assert ds.Modality == modality
    assert ds.PhotometricInterpretation == photometric
    assert ds.ViewPosition == "AP" and ds.BodyPartExamined == "CHEST"
    assert list(ds.PatientOrientation) == list(rad.patient_orientation)
    assert [float(v) for v in ds.ImagerPixelSpacing] == pytest.approx(list(rad.pixel_spacing))
    assert ("PixelSpacing" in ds) == (modality == "CR")
    assert (ds.Rows, ds.Columns) == rad.pixels.shape
    np.testing.assert_array_equal(ds.pixel_array, rad.pixels)
    if modality == "DX":
        assert ds.PresentationLUTShape == (
            "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
        )
    seen, errors = dciodvfy_errors(path)
    assert seen == iod, f"expected dciodvfy to see {iod}, found {seen!r}"
    assert not errors, errors
