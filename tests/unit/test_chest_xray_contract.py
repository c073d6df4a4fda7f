"""The chest_xray_nodule input/output contract: grid geometry, intensity, findings."""

from __future__ import annotations

import numpy as np
import pytest

from workers.inference.chest_xray import (
    CXR_MAP_SIZE,
    CXR_SIZE,
    CXR_SPACING_MM,
    CXR_STRIDE,
    radiograph_findings,
    radiograph_spacing,
    to_radiograph_input,
)


@pytest.mark.parametrize(("shape", "spacing"), [((2000, 1700), 0.2), ((1024, 1300), 0.33)])
def test_a_bright_spot_lands_where_the_grid_says(shape: tuple[int, int], spacing: float) -> None:
    ramp = np.linspace(0, 1000, shape[0])[:, None] * np.ones(shape[1])
    image = ramp.astype(np.uint16)
    spot = (int(shape[0] * 0.3), int(shape[1] * 0.7))
    r = round(1.5 / spacing)
    with_spot = image.copy()
    with_spot[spot[0] - r : spot[0] + r + 1, spot[1] - r : spot[1] + r + 1] += 3000
    x, grid = to_radiograph_input(with_spot, (spacing, spacing), "MONOCHROME2")
    x0, _ = to_radiograph_input(image, (spacing, spacing), "MONOCHROME2")
    assert x.shape == (1, 1, CXR_SIZE, CXR_SIZE) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    diff = np.where(x - x0 > 0.1, x - x0, 0.0)[0, 0]
    seen = (
        (diff.sum(axis=1) @ np.arange(CXR_SIZE)) / diff.sum(),
        (diff.sum(axis=0) @ np.arange(CXR_SIZE)) / diff.sum(),
    )
    expected = grid.to_model(*spot)
    assert np.hypot(seen[0] - expected[0], seen[1] - expected[1]) <= 0.7, (seen, expected)
    assert grid.to_image(*expected) == pytest.approx(spot)
    # the grid covers 435 mm; where the image is smaller, the rest is zero
    if shape[0] * spacing < CXR_SIZE * CXR_SPACING_MM - 2 * CXR_SPACING_MM:
        assert (x[0, 0, 0] == 0).all() and (x[0, 0, -1] == 0).all()


def test_monochrome1_is_negated() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 4096, size=(600, 500)).astype(np.uint16)
    m2, _ = to_radiograph_input(image, (0.7, 0.7), "MONOCHROME2")
    m1, _ = to_radiograph_input((4095 - image).astype(np.uint16), (0.7, 0.7), "MONOCHROME1")
    np.testing.assert_allclose(m1, m2, atol=1e-5)
    with pytest.raises(ValueError, match="expected MONOCHROME1 or MONOCHROME2, found 'RGB'"):
        to_radiograph_input(image, (0.7, 0.7), "RGB")


def test_findings_are_local_maxima_mapped_to_image_pixels() -> None:
    score_map = np.zeros((1, 1, CXR_MAP_SIZE, CXR_MAP_SIZE), np.float32)
    score_map[0, 0, 10, 20] = 0.9
    score_map[0, 0, 10, 21] = 0.9  # the same finding: a plateau of two cells
    score_map[0, 0, 11, 20] = 0.6  # a neighbour, not a finding of its own
    score_map[0, 0, 25, 5] = 0.55
    score_map[0, 0, 3, 3] = 0.45  # below the threshold
    _, grid = to_radiograph_input(np.zeros((2150, 1750), np.uint16) + 7, (0.2, 0.2), "MONOCHROME2")
    found = radiograph_findings(score_map, grid, 0.5)
    assert [round(f.probability, 2) for f in found] == [0.9, 0.55]
    centre = (CXR_SIZE - 1) / 2
    row_model = 25 * CXR_STRIDE + (CXR_STRIDE - 1) / 2
    col_model = 5 * CXR_STRIDE + (CXR_STRIDE - 1) / 2
    assert found[1].row == pytest.approx(1074.5 + (row_model - centre) * CXR_SPACING_MM / 0.2)
    assert found[1].column == pytest.approx(874.5 + (col_model - centre) * CXR_SPACING_MM / 0.2)
    # the first lies between cells (10, 20), (10, 21) and (11, 20), weighted
    r0, c0 = grid.to_image(10 * CXR_STRIDE + 3.5, 20 * CXR_STRIDE + 3.5)
    assert r0 < found[0].row < r0 + CXR_STRIDE * CXR_SPACING_MM / 0.2 / 2
    assert c0 < found[0].column < c0 + CXR_STRIDE * CXR_SPACING_MM / 0.2 / 2


def test_spacing_prefers_the_detector_plane() -> None:
    assert radiograph_spacing((0.15, 0.15), (0.14, 0.14), (2000, 2000)) == (0.15, 0.15)
    assert radiograph_spacing(None, (0.14, 0.14), (2000, 2000)) == (0.14, 0.14)
    assert radiograph_spacing(None, None, (2150, 1000)) == pytest.approx((0.2, 0.2))
