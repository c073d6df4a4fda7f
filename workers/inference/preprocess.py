"""Preprocessing shared by training and inference: windowing, resampling, normalisation.

The models see axial slices resampled to a fixed grid centred on the image centre, HU
clipped to ``HU_WINDOW`` and scaled by ``(hu - HU_CENTER) / HU_SCALE``. The segmentation
U-Net uses ``MODEL_SIZE`` x ``MODEL_SIZE`` pixels of ``MODEL_SPACING_MM`` mm. The nodule
classifier uses the same 384 mm field of view on a finer grid, ``CNN_SIZE`` x ``CNN_SIZE``
pixels of ``CNN_SPACING_MM`` mm (a 3 mm nodule covers more than two pixels), and sees each
slice with its two neighbours as ``CNN_CHANNELS`` channels (previous, slice, next along the
sorted volume, mirrored at its ends), which tells a small nodule from the cross-section of
a vessel.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

MODEL_SIZE = 160
MODEL_SPACING_MM = 2.4
CNN_SIZE = 320
CNN_SPACING_MM = 1.2
CNN_CHANNELS = 3
HU_WINDOW = (-1000.0, 500.0)
HU_CENTER = -250.0
HU_SCALE = 750.0
AIR_HU = -1000.0


def _axis_map(
    n_src: int, src_step: float, n_dst: int, dst_step: float
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float32], NDArray[np.bool_]]:
    """Source indices and weights for destination pixel centres (both grids centred)."""
    pos = (np.arange(n_dst, dtype=np.float64) - (n_dst - 1) / 2.0) * dst_step / src_step
    pos += (n_src - 1) / 2.0
    valid = (pos >= -0.5) & (pos <= n_src - 0.5)
    pos = np.clip(pos, 0.0, n_src - 1.0)
    i0 = np.floor(pos).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_src - 1)
    w = (pos - i0).astype(np.float32)
    return i0, i1, w, valid


# Source bytes per step of `resample_slices`: whole-volume temporaries (hundreds of MB for
# a 512x512 CT) miss the caches and fault in fresh pages; steps of about 1 MiB ran the two
# models' grids of a 100-slice CT 2-3x faster, with the same values (bench/results/
# pipeline_profile.md, round 3).
RESAMPLE_STEP_BYTES = 1 << 20


def resample_slices(
    slices: NDArray[np.floating],
    src_spacing: tuple[float, float],
    dst_spacing: tuple[float, float],
    dst_shape: tuple[int, int],
    fill: float,
) -> NDArray[np.float32]:
    """Bilinear in-plane resampling of (..., rows, cols) between centred grids.

    Pixels of the destination outside the source field of view get ``fill``. Each slice is
    computed on its own (the same operations whatever the batch), so a slice resampled
    alone equals the same slice resampled in a volume, bit for bit.
    """
    r0, r1, wr, vr = _axis_map(slices.shape[-2], src_spacing[0], dst_shape[0], dst_spacing[0])
    c0, c1, wc, vc = _axis_map(slices.shape[-1], src_spacing[1], dst_shape[1], dst_spacing[1])
    flat = slices.reshape(-1, slices.shape[-2], slices.shape[-1])
    out = np.empty((flat.shape[0], dst_shape[0], dst_shape[1]), dtype=np.float32)
    step = max(1, RESAMPLE_STEP_BYTES // max(1, flat[0].nbytes))
    for start in range(0, flat.shape[0], step):
        part = flat[start : start + step]
        a = part[:, r0, :]
        b = part[:, r1, :]
        rows = a + (b - a) * wr[:, None]
        a = rows[..., c0]
        b = rows[..., c1]
        out[start : start + step] = a + (b - a) * wc
    outside = ~(vr[:, None] & vc[None, :])
    if outside.any():
        out[..., outside] = fill
    return out.reshape(*slices.shape[:-2], dst_shape[0], dst_shape[1])


def normalise_hu(hu: NDArray[np.float32]) -> NDArray[np.float32]:
    """Window and scale HU values to the models' input range (about -1 to 1)."""
    out = np.clip(hu, HU_WINDOW[0], HU_WINDOW[1])
    out -= HU_CENTER
    out /= HU_SCALE
    return out.astype(np.float32, copy=False)


def to_model_input(
    hu_slices: NDArray[np.floating],
    pixel_spacing: tuple[float, float],
    size: int = MODEL_SIZE,
    spacing_mm: float = MODEL_SPACING_MM,
) -> NDArray[np.float32]:
    """(S, rows, cols) HU -> (S, 1, size, size) float32 model input (default: U-Net grid)."""
    src = np.asarray(hu_slices, dtype=np.float32)
    res = resample_slices(src, pixel_spacing, (spacing_mm, spacing_mm), (size, size), AIR_HU)
    return normalise_hu(res)[:, None, :, :]


def to_cnn_slices(
    hu_slices: NDArray[np.floating], pixel_spacing: tuple[float, float]
) -> NDArray[np.float32]:
    """(S, rows, cols) HU -> (S, 1, CNN_SIZE, CNN_SIZE) float32 slices on the CNN grid."""
    return to_model_input(hu_slices, pixel_spacing, CNN_SIZE, CNN_SPACING_MM)


def neighbour_indices(n: int, start: int = 0, stop: int | None = None) -> NDArray[np.intp]:
    """(m, 3) indices (previous, slice, next) of slices start..stop-1 of an n-slice volume.

    At the ends the missing neighbour is mirrored (slice 0 gets slice 1 on both sides), so
    that an end slice looks like any other slice rather than like a structure that runs
    along z; a single-slice volume repeats its slice.
    """
    stop = n if stop is None else min(stop, n)
    idx = np.arange(start, stop)
    prev = np.abs(idx - 1)
    nxt = (n - 1) - np.abs(n - 2 - idx)
    if n == 1:
        prev = nxt = idx
    return np.stack([prev, idx, nxt], axis=1)


def with_neighbours(
    slices: NDArray[np.floating], start: int = 0, stop: int | None = None
) -> NDArray[np.float32]:
    """(S, 1, H, W) sorted slices -> (m, 3, H, W) for slices start..stop-1, the channels being
    the previous slice, the slice and the next one (see ``neighbour_indices``)."""
    idx = neighbour_indices(len(slices), start, stop)
    return np.asarray(slices[idx, 0], dtype=np.float32)


def to_cnn_input(
    hu_slices: NDArray[np.floating], pixel_spacing: tuple[float, float]
) -> NDArray[np.float32]:
    """(S, rows, cols) HU of a sorted volume -> (S, 3, CNN_SIZE, CNN_SIZE) nodule CNN input."""
    return with_neighbours(to_cnn_slices(hu_slices, pixel_spacing))


def from_model_grid(
    maps: NDArray[np.float32], pixel_spacing: tuple[float, float], shape: tuple[int, int]
) -> NDArray[np.float32]:
    """(S, K, MODEL_SIZE, MODEL_SIZE) class maps -> (S, K, rows, cols) on the source grid.

    Outside the model field of view, class 0 (background) gets 1 and the others 0.
    """
    out = resample_slices(
        maps, (MODEL_SPACING_MM, MODEL_SPACING_MM), pixel_spacing, shape, fill=0.0
    )
    _, _, _, valid_r = _axis_map(MODEL_SIZE, MODEL_SPACING_MM, shape[0], pixel_spacing[0])
    _, _, _, valid_c = _axis_map(MODEL_SIZE, MODEL_SPACING_MM, shape[1], pixel_spacing[1])
    outside = ~(valid_r[:, None] & valid_c[None, :])
    if outside.any():
        out[:, 0][:, outside] = 1.0
    return out


def _coarse_labels(diff: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Argmax over [0, d1, ..., dK-1] per pixel of (S, K-1, H, W) differences to class 0;
    ties go to the lower class, as with np.argmax. Element-wise over the classes: numpy
    reduces slowly along a short middle axis."""
    best = diff[:, 0].copy()
    lab = np.ones(best.shape, dtype=np.uint8)
    for j in range(1, diff.shape[1]):
        better = diff[:, j] > best
        lab[better] = j + 1
        np.maximum(best, diff[:, j], out=best)
    lab[best <= 0] = 0
    return lab


def labels_from_probabilities(
    probabilities: NDArray[np.float32],
    pixel_spacing: tuple[float, float],
    shape: tuple[int, int],
    size: int = MODEL_SIZE,
    spacing_mm: float = MODEL_SPACING_MM,
) -> NDArray[np.uint8]:
    """Argmax label map on the source grid of bilinearly upsampled class maps
    (`from_model_grid`), computed only where it can differ from the model grid's own labels.

    Only the K-1 differences to class 0 are interpolated (bilinear is linear, so the argmax
    is the same). A source pixel is a convex combination of the four model-grid pixels
    around it, and each condition that makes class c the argmax (d_c > 0, d_c > d_j below
    it, d_c >= d_j above it) holds for a convex combination where it holds at all four
    corners: where the four corners carry one label, so does every pixel between them. Only
    pixels of cells whose corners disagree (the outlines) are interpolated, with the same
    float32 operations in the same order as the whole-grid computation, so the labels are
    the same: 100 slices of 512x512 in about 0.05 s instead of 0.69 s.
    """
    r0, r1, wr, vr = _axis_map(size, spacing_mm, shape[0], pixel_spacing[0])
    c0, c1, wc, vc = _axis_map(size, spacing_mm, shape[1], pixel_spacing[1])
    block = np.asarray(probabilities, dtype=np.float32)
    diff = block[:, 1:] - block[:, :1]  # (S, K-1, M, M): class k minus background
    coarse = _coarse_labels(diff)
    # a cell (i, j) spans corners i..i+1 and j..j+1, clipped at the last row and column
    # as `_axis_map` clips r1 and c1
    below = right = np.minimum(np.arange(size) + 1, size - 1)
    down = coarse[:, below]
    uniform = (coarse == down) & (coarse == coarse[:, :, right]) & (down == down[:, :, right])
    labels = np.take(np.take(coarse, r0, axis=1), c0, axis=2)
    s, y, x = _pixels_of_cells(np.nonzero(~uniform), size, r0, c0)
    if len(s):
        ry0, ry1, wy = r0[y], r1[y], wr[y]
        cx0, cx1, wx = c0[x], c1[x], wc[x]
        values = np.empty((diff.shape[1], len(s)), dtype=np.float32)
        for j in range(diff.shape[1]):
            d = diff[:, j]
            top = d[s, ry0, cx0]
            top += (d[s, ry1, cx0] - top) * wy
            bottom = d[s, ry0, cx1]
            bottom += (d[s, ry1, cx1] - bottom) * wy
            top += (bottom - top) * wx
            values[j] = top
        labels[s, y, x] = _coarse_labels(values[None, :, :, None])[0, :, 0]
    outside = ~(vr[:, None] & vc[None, :])
    if outside.any():
        labels[:, outside] = 0
    return labels


def _pixels_of_cells(
    cells: tuple[NDArray[np.intp], ...], size: int, r0: NDArray[np.intp], c0: NDArray[np.intp]
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.intp]]:
    """(slice, row, column) of every source pixel inside the cells (slice, i, j) of a
    ``size`` x ``size`` model grid: those whose `_axis_map` corner is (i, j). The corners
    are sorted, so each cell's pixels are one block of rows by one block of columns."""
    cs, ci, cj = cells
    cell_index = np.arange(size)
    row_start = np.searchsorted(r0, cell_index, "left")
    row_count = np.searchsorted(r0, cell_index, "right") - row_start
    col_start = np.searchsorted(c0, cell_index, "left")
    col_count = np.searchsorted(c0, cell_index, "right") - col_start
    rows, cols = row_count[ci], col_count[cj]
    count = rows * cols
    cell = np.repeat(np.arange(len(cs)), count)
    offset = np.arange(len(cell)) - np.repeat(np.cumsum(count) - count, count)
    cols_of = cols[cell]
    return (
        cs[cell],
        row_start[ci][cell] + offset // cols_of,
        col_start[cj][cell] + offset % cols_of,
    )
