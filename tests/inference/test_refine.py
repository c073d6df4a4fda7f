"""The model's outline refined on the CT: a too-small, staircase outline grows to the HU edge
of the nodule, a vessel touching it is cut off, and the pipeline file's `refine` is checked."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from gateway.pipelines.description import SegmentDescription
from gateway.pipelines.lung_nodules.findings import lung_nodules_description
from gateway.pipelines.refine import refine_by_threshold

SPACING = (2.0, 0.7, 0.7)


def _scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lung (-850 HU) with a 14 mm solid sphere (40 HU) and a 2 mm vessel running into it;
    the model's outline: a 9 mm box around the centre (too small, square)."""
    shape = (15, 80, 80)
    zz, yy, xx = np.indices(shape, dtype=float)
    zz, yy, xx = (zz - 7) * SPACING[0], (yy - 40) * SPACING[1], (xx - 40) * SPACING[2]
    truth = zz**2 + yy**2 + xx**2 <= 7.0**2
    vessel = (np.abs(yy) <= 1.0) & (np.abs(zz) <= 1.0) & (xx > 0)
    hu = np.where(truth | vessel, 40.0, -850.0).astype(np.float32)
    labels = np.ones(shape, np.uint8)
    labels[(np.abs(zz) <= 4.5) & (np.abs(yy) <= 4.5) & (np.abs(xx) <= 4.5)] = 2
    return labels, hu, truth


def _distance_mm(shape: tuple[int, ...]) -> np.ndarray:
    zz, yy, xx = np.indices(shape, dtype=float)
    return np.sqrt(
        ((zz - 7) * SPACING[0]) ** 2 + ((yy - 40) * SPACING[1]) ** 2 + ((xx - 40) * SPACING[2]) ** 2
    )


def test_outline_grows_to_the_nodule_and_drops_the_vessel() -> None:
    labels, hu, truth = _scene()
    # a margin wide enough for the vessel to run 3.5 mm past the nodule's surface
    refined = refine_by_threshold(labels, hu, 2, SPACING, -400.0, 6.0, 2.0, outside_label=1)
    nodule = refined == 2
    # the sphere (bar its caps, rounded by the opening); nothing of the vessel beyond its
    # surface (one pixel of rounding)
    assert (nodule & truth).sum() >= 0.95 * truth.sum()
    beyond = nodule & (_distance_mm(labels.shape) > 7.0 + SPACING[1])
    assert not beyond.any(), f"expected the vessel cut off, found {beyond.sum()} voxels of it"
    assert set(np.unique(refined)) == {1, 2}


def test_component_without_solid_voxels_keeps_the_model_outline() -> None:
    labels, hu, _truth = _scene()
    hu[:] = -850.0
    refined = refine_by_threshold(labels, hu, 2, SPACING, -400.0, 3.0, 2.0, outside_label=1)
    assert np.array_equal(refined, labels)


def test_lung_nodules_declares_refine_and_it_needs_components() -> None:
    nodule = lung_nodules_description().segment(2)
    assert nodule.refine is not None and nodule.refine.threshold_hu == -400.0
    fields = nodule.model_dump() | {"components": False}
    with pytest.raises(ValidationError, match="components = true for refine"):
        SegmentDescription.model_validate(fields)
    with pytest.raises(ValidationError):
        SegmentDescription.model_validate(
            nodule.model_dump() | {"refine": {"method": "watershed", "threshold_hu": -400.0}}
        )
