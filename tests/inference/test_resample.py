"""`resample_slices` works a few slices at a time (workers/inference/preprocess.py): the
values must equal the whole-volume formula the models were trained with, bit for bit, for
any batch shape, and a slice resampled alone (the prefetcher) must equal it in a volume."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from workers.inference.preprocess import _axis_map, resample_slices


def whole_volume(
    slices: NDArray[np.floating],
    src: tuple[float, float],
    dst: tuple[float, float],
    shape: tuple[int, int],
    fill: float,
) -> NDArray[np.float32]:
    """The formula on the whole array at once, as it was before the steps."""
    r0, r1, wr, vr = _axis_map(slices.shape[-2], src[0], shape[0], dst[0])
    c0, c1, wc, vc = _axis_map(slices.shape[-1], src[1], shape[1], dst[1])
    a = slices[..., r0, :]
    b = slices[..., r1, :]
    rows = a + (b - a) * wr[:, None]
    a = rows[..., c0]
    b = rows[..., c1]
    out = (a + (b - a) * wc).astype(np.float32, copy=False)
    outside = ~(vr[:, None] & vc[None, :])
    out[..., outside] = fill
    return out


@pytest.mark.parametrize(
    ("shape", "dtype", "src", "dst", "size"),
    [
        ((37, 512, 512), np.float32, (0.7, 0.7), (1.2, 1.2), (320, 320)),  # CNN grid, 1 per step
        ((9, 64, 48), np.float32, (0.9, 0.8), (2.4, 2.4), (160, 160)),  # many per step, FOV fill
        ((5, 3, 160, 160), np.float32, (2.4, 2.4), (0.7, 0.7), (512, 512)),  # class maps back
        ((4, 100, 90), np.float64, (0.5, 0.6), (0.45, 0.7), (120, 70)),
        ((64, 70), np.float32, (1.0, 1.0), (2.0, 2.0), (40, 40)),  # one slice, no batch axis
    ],
)
def test_steps_equal_the_whole_volume_formula(
    shape: tuple[int, ...],
    dtype: type[np.floating],
    src: tuple[float, float],
    dst: tuple[float, float],
    size: tuple[int, int],
) -> None:
    rng = np.random.default_rng(sum(shape))
    slices = (rng.random(shape) * 2000 - 1000).astype(dtype)
    got = resample_slices(slices, src, dst, size, fill=-1000.0)
    want = whole_volume(slices, src, dst, size, fill=-1000.0)
    assert got.dtype == np.float32
    assert got.shape == want.shape == (*shape[:-2], *size)
    assert np.array_equal(got, want)


def test_a_slice_alone_equals_the_slice_in_its_volume() -> None:
    rng = np.random.default_rng(3)
    volume = (rng.random((6, 256, 256)) * 1500 - 1000).astype(np.float32)
    together = resample_slices(volume, (0.8, 0.8), (1.2, 1.2), (320, 320), -1000.0)
    for k in range(len(volume)):
        alone = resample_slices(volume[k : k + 1], (0.8, 0.8), (1.2, 1.2), (320, 320), -1000.0)
        assert np.array_equal(alone[0], together[k])
