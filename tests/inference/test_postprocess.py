"""Measurements of known spheres, preprocessing round trip, phantom generator sanity."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from gateway.phantom import LABEL_LUNG, LABEL_NODULE, make_phantom
from workers.inference.postprocess import measure_nodules
from workers.inference.preprocess import (
    CNN_CHANNELS,
    CNN_SIZE,
    CNN_SPACING_MM,
    MODEL_SIZE,
    MODEL_SPACING_MM,
    from_model_grid,
    labels_from_probabilities,
    neighbour_indices,
    resample_slices,
    to_cnn_input,
    to_cnn_slices,
    to_model_input,
    with_neighbours,
)
from workers.inference.series import Volume


def _volume(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Volume:
    n = shape[0]
    positions = np.zeros((n, 3))
    positions[:, 0] = -100.0
    positions[:, 1] = -50.0
    positions[:, 2] = 10.0 + np.arange(n) * spacing[0]
    return Volume(
        hu=np.zeros(shape, np.float32),
        pixel_spacing=(spacing[1], spacing[2]),
        slice_spacing=spacing[0],
        positions=positions,
        row_direction=np.array([1.0, 0, 0]),
        column_direction=np.array([0, 1.0, 0]),
        normal=np.array([0, 0, 1.0]),
        sop_instance_uids=tuple(str(i) for i in range(n)),
        study_instance_uid="1",
        series_instance_uid="2",
        frame_of_reference_uid="3",
    )


def _sphere(shape, spacing, center_idx, radius_mm):  # type: ignore[no-untyped-def]
    zz, yy, xx = np.indices(shape, dtype=float)
    d2 = (
        ((zz - center_idx[0]) * spacing[0]) ** 2
        + ((yy - center_idx[1]) * spacing[1]) ** 2
        + ((xx - center_idx[2]) * spacing[2]) ** 2
    )
    return d2 <= radius_mm**2


@pytest.mark.parametrize("spacing", [(1.0, 0.7, 0.7), (2.5, 0.6, 0.9)])
def test_sphere_measurements(spacing: tuple[float, float, float]) -> None:
    shape = (40, 120, 120)
    labels = np.zeros(shape, np.uint8)
    big = _sphere(shape, spacing, (20, 40, 40), 10.0)  # 20 mm diameter
    small = _sphere(shape, spacing, (20, 90, 90), 4.0)  # 8 mm diameter
    labels[big | small] = LABEL_NODULE
    vol = _volume(shape, spacing)
    found = measure_nodules(labels, vol)
    assert len(found) == 2
    first, second = found
    assert first.index == 1 and second.index == 2
    assert first.volume_mm3 == pytest.approx(4 / 3 * math.pi * 10**3, rel=0.05)
    assert second.volume_mm3 == pytest.approx(4 / 3 * math.pi * 4**3, rel=0.15)
    assert first.longest_diameter_mm == pytest.approx(20.0, abs=max(spacing) + 0.5)
    assert second.longest_diameter_mm == pytest.approx(8.0, abs=max(spacing) + 0.5)
    expected = (-100.0 + 40 * spacing[2], -50.0 + 40 * spacing[1], 10.0 + 20 * spacing[0])
    np.testing.assert_allclose(first.centroid_patient_mm, expected, atol=0.05)
    assert first.slice_range[0] <= 20 <= first.slice_range[1]


def test_no_nodule_no_findings() -> None:
    labels = np.full((4, 10, 10), LABEL_LUNG, np.uint8)
    assert measure_nodules(labels, _volume((4, 10, 10), (1, 1, 1))) == []


def test_resampling_round_trip_keeps_a_disc() -> None:
    spacing = (0.7, 0.7)
    n = 512
    yy, xx = np.indices((n, n))
    disc = ((yy - 300) ** 2 + (xx - 200) ** 2) * 0.49 <= 15.0**2
    probs = np.zeros((1, 3, n, n), np.float32)
    probs[0, 0] = ~disc
    probs[0, 2] = disc
    small = resample_slices(probs, spacing, (2.4, 2.4), (MODEL_SIZE, MODEL_SIZE), 0.0)
    back = labels_from_probabilities(small, spacing, (n, n))
    got = back[0] == 2
    dice = 2 * (got & disc).sum() / (got.sum() + disc.sum())
    assert dice > 0.95


def test_model_input_range_and_shape() -> None:
    hu = np.full((2, 512, 512), -1000.0, np.float32)
    hu[:, 200:300, 200:300] = 40.0
    x = to_model_input(hu, (0.7, 0.7))
    assert x.shape == (2, 1, MODEL_SIZE, MODEL_SIZE) and x.dtype == np.float32
    assert x.min() == pytest.approx(-1.0) and x.max() == pytest.approx((40 + 250) / 750)


def test_cnn_input_finer_grid_same_field_of_view() -> None:
    assert pytest.approx(MODEL_SIZE * MODEL_SPACING_MM) == CNN_SIZE * CNN_SPACING_MM
    hu = np.full((3, 512, 512), -1000.0, np.float32)
    hu[1, 254:258, 254:258] = 40.0  # a 2.8 mm square at the centre, on the middle slice only
    x = to_cnn_input(hu, (0.7, 0.7))
    assert x.shape == (3, CNN_CHANNELS, CNN_SIZE, CNN_SIZE) and x.dtype == np.float32
    # channels: previous, slice, next (mirrored at the ends: slice 0 sees slice 1 twice)
    centre = x[:, :, CNN_SIZE // 2 - 2 : CNN_SIZE // 2 + 2, CNN_SIZE // 2 - 2 : CNN_SIZE // 2 + 2]
    bright = centre.max(axis=(2, 3)) > 0.0
    assert bright.tolist() == [[True, False, True], [False, True, False], [True, False, True]]
    assert np.count_nonzero(x[1, 1] > 0.0) >= 4  # about 2.3 pixels of 1.2 mm across
    np.testing.assert_array_equal(with_neighbours(to_cnn_slices(hu, (0.7, 0.7)), 1, 2), x[1:2])


def test_neighbour_indices_mirror_at_the_ends() -> None:
    assert neighbour_indices(4).tolist() == [[1, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 2]]
    assert neighbour_indices(4, 2, 9).tolist() == [[1, 2, 3], [2, 3, 2]]
    assert neighbour_indices(1).tolist() == [[0, 0, 0]]


def test_phantom_generator_fast_and_sane() -> None:
    t = time.perf_counter()
    ph = make_phantom(7, shape=(100, 512, 512), spacing=(2.0, 0.7, 0.7), n_nodules=3)
    elapsed = time.perf_counter() - t
    assert elapsed < 10.0
    assert ph.hu.dtype == np.int16 and ph.labels.dtype == np.uint8
    assert len(ph.nodules) == 3 and ph.has_nodule
    lung = ph.hu[ph.labels == LABEL_LUNG]
    assert -900 < float(np.median(lung)) < -800
    for n in ph.nodules:
        assert 3.0 <= n.diameter_mm <= 30.0
        k, r, c = (round(v) for v in n.center_index)
        assert ph.labels[k, r, c] == LABEL_NODULE
    again = make_phantom(7, shape=(100, 512, 512), spacing=(2.0, 0.7, 0.7), n_nodules=3)
    np.testing.assert_array_equal(again.hu, ph.hu)


def _dense_labels(
    probabilities: np.ndarray, pixel_spacing: tuple[float, float], shape: tuple[int, int]
) -> np.ndarray:
    """The reference: every class map upsampled whole (`from_model_grid`), then argmax."""
    up = from_model_grid(probabilities, pixel_spacing, shape)
    return np.argmax(up, axis=1).astype(np.uint8)


@pytest.mark.parametrize(
    ("classes", "spacing", "shape"),
    [
        (3, (0.7, 0.7), (512, 512)),  # field of view inside the model's
        (4, (0.9, 0.6), (300, 420)),  # anisotropic pixels, not square
        (3, (1.0, 1.0), (512, 512)),  # wider than the model's 384 mm: an outside border
    ],
)
def test_labels_equal_the_whole_grid_argmax(
    classes: int, spacing: tuple[float, float], shape: tuple[int, int]
) -> None:
    """Only outline cells are interpolated; the labels must be those of upsampling every
    class map whole, on smooth random maps with many outlines."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(classes)
    raw = gaussian_filter(
        rng.normal(size=(6, classes, MODEL_SIZE, MODEL_SIZE)), (0, 0, 3, 3)
    ).astype(np.float32)
    e = np.exp(30 * (raw - raw.max(axis=1, keepdims=True)))
    probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    got = labels_from_probabilities(probs, spacing, shape)
    expected = _dense_labels(probs, spacing, shape)
    assert got.shape == expected.shape
    # float rounding can only differ at exact ties between classes
    assert np.count_nonzero(got != expected) <= got.size * 1e-6
    assert len(np.unique(got)) == classes  # every class present: outlines were exercised
