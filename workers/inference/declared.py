"""What a pipeline file declares, as the inference client uses it: model specs, the
preprocessing of slices, the acceptance check of a series read from disk."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray

from gateway.pipelines.description import ModelDescription, Preprocess
from gateway.routing.config import SeriesSelectionSettings
from workers.inference.errors import PermanentInferenceError
from workers.inference.preprocess import resample_slices
from workers.inference.runners import ModelSpec


class NotAccepted(PermanentInferenceError):
    """The series is not one the pipeline accepts; `reason` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"not_accepted.{reason}: {message}")
        self.reason = f"not_accepted.{reason}"


def model_spec(model: ModelDescription) -> ModelSpec:
    return ModelSpec(
        name=model.name,
        version=model.version,
        input_name=model.input,
        input_shape=tuple(model.input_shape),
        output_name=model.output,
        output_shape=tuple(model.output_shape),
        dtype=model.dtype,
    )


def check_accepted(
    paths: Sequence[Path | str], accepts: SeriesSelectionSettings, pipeline: str
) -> None:
    """Raise NotAccepted unless the series' modality, instance count and geometry are what
    the pipeline accepts (one header read; the volume reader checks the rest)."""
    if not paths:
        raise NotAccepted("no_images", "expected images, found none")
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    modality = str(first.get("Modality", "")).upper()
    wanted = [m.upper() for m in accepts.modalities]
    if modality not in wanted:
        raise NotAccepted(
            "modality", f"pipeline {pipeline!r} expects modality in {wanted}, found {modality!r}"
        )
    if not accepts.min_slices <= len(paths) <= accepts.max_slices:
        raise NotAccepted(
            "slice_count",
            f"pipeline {pipeline!r} expects {accepts.min_slices}-{accepts.max_slices} "
            f"instances, found {len(paths)}",
        )
    if accepts.geometry == "volume" and "ImageOrientationPatient" not in first:
        raise NotAccepted(
            "geometry",
            f"pipeline {pipeline!r} expects a volume (ImageOrientationPatient), found none",
        )
    if accepts.geometry == "image":
        check_image_accepted(first, accepts, pipeline)


def check_image_accepted(
    first: pydicom.Dataset, accepts: SeriesSelectionSettings, pipeline: str
) -> None:
    """A projection image: one frame, and a view the pipeline takes (not a lateral)."""
    frames = int(first.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise NotAccepted(
            "geometry",
            f"pipeline {pipeline!r} expects one single-frame image, found {frames} frames",
        )
    view = str(first.get("ViewPosition", "") or "").strip().upper()
    wanted = [v.upper() for v in accepts.view_positions]
    if wanted and view and view not in wanted:
        raise NotAccepted(
            "view_position",
            f"pipeline {pipeline!r} expects ViewPosition in {wanted}, found {view!r}",
        )


def grid_spacing(
    p: Preprocess, pixel_spacing: tuple[float, float], shape: tuple[int, int]
) -> float:
    """The grid's pixel spacing: declared, or the image's field of view fitted to the grid."""
    if p.spacing_mm is not None:
        return p.spacing_mm
    return max(shape[0] * pixel_spacing[0], shape[1] * pixel_spacing[1]) / p.size


def to_grid(
    values: NDArray[np.floating], pixel_spacing: tuple[float, float], p: Preprocess
) -> NDArray[np.float32]:
    """(S, rows, cols) rescaled values -> (S, 1, size, size) windowed and normalised."""
    src = np.asarray(values, dtype=np.float32)
    spacing = grid_spacing(p, pixel_spacing, (src.shape[1], src.shape[2]))
    fill = p.window[0] if p.fill is None else p.fill
    out = resample_slices(src, pixel_spacing, (spacing, spacing), (p.size, p.size), fill)
    out = np.clip(out, p.window[0], p.window[1])
    out -= p.center
    out /= p.scale
    return out.astype(np.float32, copy=False)[:, None, :, :]


def neighbour_stack(
    slices: NDArray[np.float32], neighbours: int, start: int, stop: int
) -> NDArray[np.float32]:
    """(S, 1, H, W) -> (m, 2k+1, H, W) for slices start..stop-1: each slice with k slices
    either side, mirrored at the ends (a single slice repeats itself)."""
    n = len(slices)
    idx = np.arange(start, min(stop, n))
    offsets = np.arange(-neighbours, neighbours + 1)
    pos = idx[:, None] + offsets[None, :]
    if n == 1:
        pos = np.zeros_like(pos)
    else:
        period = 2 * (n - 1)
        pos = np.abs(pos) % period
        pos = np.where(pos > n - 1, period - pos, pos)
    return np.asarray(slices[pos, 0], dtype=np.float32)


def reverses_slices(p: Preprocess, normal: NDArray[np.float64]) -> bool:
    """Whether the reader's order (ascending along the slice normal) must be reversed for
    the model: `slice_order` against the normal, or a head-foot direction the normal's
    patient z (LPS: +z superior) points away from."""
    if p.slice_order == "against_normal":
        return True
    if p.slice_order == "inferior_to_superior":
        return bool(normal[2] < 0)
    if p.slice_order == "superior_to_inferior":
        return bool(normal[2] >= 0)
    return False


def to_slabs(slices: NDArray[np.float32], slab: int) -> NDArray[np.float32]:
    """(S, 1, H, W) -> (ceil(S / slab), 1, slab, H, W): consecutive slices as 3D items, the
    last one padded by repeating the last slice (edge) so that it has `slab` slices too."""
    n = len(slices)
    pad = -n % slab
    if pad:
        slices = np.pad(slices, ((0, pad), (0, 0), (0, 0), (0, 0)), mode="edge")
    h, w = slices.shape[2:]
    return np.ascontiguousarray(slices.reshape(-1, slab, 1, h, w).transpose(0, 2, 1, 3, 4))


def from_slabs(out: NDArray[np.float32], count: int) -> NDArray[np.float32]:
    """(n, C, slab, H, W) model outputs -> (count, C, H, W) per slice, the padding of the
    last slab dropped."""
    n, c, slab, h, w = out.shape
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3, 4).reshape(n * slab, c, h, w)[:count])
