"""Model-grid slices: the per-slice part of a model's preprocessing (resample, window, scale;
`to_grid`), which the prefetcher makes while the series arrives and the analysers take from
the volume. Slice order, neighbours and slabs come later, on the whole volume."""

from __future__ import annotations

import hashlib

import numpy as np
from numpy.typing import NDArray

from gateway.pipelines.description import Preprocess
from workers.inference.declared import to_grid
from workers.inference.series import Volume


def grid_key(p: Preprocess) -> str:
    """Everything `to_grid` reads of `p`: equal keys, equal slices."""
    what = repr((p.size, p.spacing_mm, tuple(p.window), p.center, p.scale, p.fill))
    return "g" + hashlib.sha256(what.encode()).hexdigest()[:16]


def slice_grid(
    hu: NDArray[np.float32], pixel_spacing: tuple[float, float], p: Preprocess
) -> NDArray[np.float32]:
    """One (rows, cols) slice of rescaled values -> its (size, size) model-grid slice."""
    return to_grid(hu[None], pixel_spacing, p)[0, 0]


def model_grid(volume: Volume, p: Preprocess) -> NDArray[np.float32]:
    """`to_grid(volume.hu, volume.pixel_spacing, p)`: (S, 1, size, size), made only for the
    slices the prefetcher did not make (the same arithmetic per slice, so the same values)."""
    cached = volume.grids.get(grid_key(p)) if p.method == "window" else None
    if cached is None or all(g is None for g in cached):
        return to_grid(volume.hu, volume.pixel_spacing, p)
    out = np.empty((len(cached), 1, p.size, p.size), dtype=np.float32)
    missing = [k for k, g in enumerate(cached) if g is None]
    for k, grid in enumerate(cached):
        if grid is not None:
            out[k, 0] = grid
    if missing:
        out[missing] = to_grid(volume.hu[missing], volume.pixel_spacing, p)
    return out
