"""Input and output contract of the ``chest_xray_nodule`` model (a chest radiograph, 2D).

Input: the whole radiograph resampled to ``CXR_SIZE`` x ``CXR_SIZE`` pixels of
``CXR_SPACING_MM`` mm at the detector plane (a 435 mm field of view centred on the image
centre; area-averaged first when the image is finer), values after the Modality LUT,
negated for MONOCHROME1 (so that bone and soft tissue are bright), then scaled so that the
1st and 99th percentiles of the pixels inside the image become 0 and 1, clipped to [0, 1];
pixels outside the image are 0. No reorientation: the model was trained on both
PatientOrientation L\\F and R\\F, PA and AP.

Output ``score_map`` [N, 1, 32, 32]: calibrated probability per cell of 8 x 8 input pixels
(13.6 mm) that a nodule is centred there. The image-level probability is its maximum; each
local maximum (5 x 5 cells) at or above the threshold is one finding, placed at the
probability-weighted centroid of its 3 x 3 cells and mapped back to image pixels.
Shared by the training script, the tests and the pipeline; numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

CXR_SIZE = 256
CXR_SPACING_MM = 1.7
CXR_STRIDE = 8
CXR_MAP_SIZE = CXR_SIZE // CXR_STRIDE
CXR_THRESHOLD = 0.5
NOMINAL_LONG_SIDE_MM = 430.0
"""Assumed detector size when an image has neither ImagerPixelSpacing nor PixelSpacing."""
PERCENTILES = (1.0, 99.0)


@dataclass(frozen=True)
class RadiographGrid:
    """How the model grid lies on the source image (both centred on the image centre)."""

    rows: int
    columns: int
    spacing: tuple[float, float]
    """Source (row, column) spacing in mm."""

    def to_image(self, row: float, column: float) -> tuple[float, float]:
        """Source image pixel (row, column) of a model-grid pixel position."""
        centre = (CXR_SIZE - 1) / 2.0
        return (
            (self.rows - 1) / 2.0 + (row - centre) * CXR_SPACING_MM / self.spacing[0],
            (self.columns - 1) / 2.0 + (column - centre) * CXR_SPACING_MM / self.spacing[1],
        )

    def to_model(self, row: float, column: float) -> tuple[float, float]:
        """Model-grid position of a source image pixel (row, column)."""
        centre = (CXR_SIZE - 1) / 2.0
        return (
            centre + (row - (self.rows - 1) / 2.0) * self.spacing[0] / CXR_SPACING_MM,
            centre + (column - (self.columns - 1) / 2.0) * self.spacing[1] / CXR_SPACING_MM,
        )


@dataclass(frozen=True)
class RadiographFinding:
    """One localised finding in source image pixels."""

    row: float
    column: float
    probability: float


def radiograph_spacing(
    imager_pixel_spacing: tuple[float, float] | None,
    pixel_spacing: tuple[float, float] | None,
    shape: tuple[int, int],
) -> tuple[float, float]:
    """(row, column) spacing in mm: ImagerPixelSpacing (the detector plane, what the model
    was trained on), else PixelSpacing, else a nominal 430 mm long side."""
    for candidate in (imager_pixel_spacing, pixel_spacing):
        if candidate is not None and all(v > 0 and math.isfinite(v) for v in candidate):
            return (float(candidate[0]), float(candidate[1]))
    step = NOMINAL_LONG_SIDE_MM / max(shape)
    return (step, step)


def _axis(
    n_src: int, step: float, block: int
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float32], NDArray[np.bool_]]:
    """Indices and weights into the block-averaged axis for each model-grid pixel."""
    pos = (np.arange(CXR_SIZE) - (CXR_SIZE - 1) / 2.0) * CXR_SPACING_MM / step
    pos += (n_src - 1) / 2.0
    valid = (pos >= -0.5) & (pos <= n_src - 0.5)
    n_blocks = n_src // block
    q = np.clip((pos - (block - 1) / 2.0) / block, 0.0, n_blocks - 1.0)
    i0 = np.floor(q).astype(np.intp)
    i1 = np.minimum(i0 + 1, n_blocks - 1)
    return i0, i1, (q - i0).astype(np.float32), valid


def _block_mean(image: NDArray[np.float32], br: int, bc: int) -> NDArray[np.float32]:
    rows, cols = image.shape[0] // br * br, image.shape[1] // bc * bc
    view = image[:rows, :cols].reshape(rows // br, br, cols // bc, bc)
    return view.mean(axis=(1, 3), dtype=np.float32)


def to_radiograph_input(
    pixels: NDArray[np.generic],
    spacing: tuple[float, float],
    photometric_interpretation: str,
    rescale: tuple[float, float] = (1.0, 0.0),
) -> tuple[NDArray[np.float32], RadiographGrid]:
    """Model input [1, 1, CXR_SIZE, CXR_SIZE] FP32 of one radiograph and its grid.

    ``pixels``: stored values (rows, columns); ``rescale``: (slope, intercept).
    """
    if pixels.ndim != 2 or min(pixels.shape) < 2:
        raise ValueError(f"expected one 2D grey-scale image, found shape {pixels.shape}")
    if photometric_interpretation not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(
            f"expected MONOCHROME1 or MONOCHROME2, found {photometric_interpretation!r}"
        )
    slope, intercept = rescale
    values = pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    if photometric_interpretation == "MONOCHROME1":
        values = -values
    rows, cols = values.shape
    br = max(1, int(CXR_SPACING_MM / spacing[0]))
    bc = max(1, int(CXR_SPACING_MM / spacing[1]))
    blocks = _block_mean(values, br, bc) if br > 1 or bc > 1 else values
    r0, r1, wr, vr = _axis(rows, spacing[0], br)
    c0, c1, wc, vc = _axis(cols, spacing[1], bc)
    a = blocks[r0]
    out = a + (blocks[r1] - a) * wr[:, None]
    a = out[:, c0]
    out = a + (out[:, c1] - a) * wc[None, :]
    inside = vr[:, None] & vc[None, :]
    lo, hi = np.percentile(out[inside], PERCENTILES)
    out = np.clip((out - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0)
    out[~inside] = 0.0
    grid = RadiographGrid(rows=rows, columns=cols, spacing=(spacing[0], spacing[1]))
    return out.astype(np.float32)[None, None], grid


def image_probability(score_map: NDArray[np.floating]) -> float:
    """Image-level probability that the radiograph shows a nodule: the map's maximum."""
    return float(np.max(score_map))


def radiograph_findings(
    score_map: NDArray[np.floating], grid: RadiographGrid, threshold: float = CXR_THRESHOLD
) -> list[RadiographFinding]:
    """Local maxima (5 x 5 cells) of one image's map at or above ``threshold``, highest
    first, each at the weighted centroid of its 3 x 3 cells, in source image pixels."""
    m = np.asarray(score_map, dtype=np.float64).reshape(CXR_MAP_SIZE, CXR_MAP_SIZE)
    padded = np.pad(m, 2, constant_values=-1.0)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (5, 5))
    peaks = (m >= threshold) & (m >= windows.max(axis=(2, 3)))
    found: list[RadiographFinding] = []
    taken = np.zeros_like(peaks)
    for flat in np.argsort(-m, axis=None):
        a, b = divmod(int(flat), CXR_MAP_SIZE)
        if not peaks[a, b]:
            continue
        if taken[max(a - 2, 0) : a + 3, max(b - 2, 0) : b + 3].any():
            continue  # a plateau: equal neighbours are one finding
        taken[a, b] = True
        ra, rb = slice(max(a - 1, 0), a + 2), slice(max(b - 1, 0), b + 2)
        w = m[ra, rb]
        cell_r = np.arange(ra.start, ra.stop)[:, None] * CXR_STRIDE + (CXR_STRIDE - 1) / 2.0
        cell_c = np.arange(rb.start, rb.stop)[None, :] * CXR_STRIDE + (CXR_STRIDE - 1) / 2.0
        row = float((w * cell_r).sum() / w.sum())
        col = float((w * cell_c).sum() / w.sum())
        r, c = grid.to_image(row, col)
        found.append(RadiographFinding(row=r, column=c, probability=float(m[a, b])))
    return found
