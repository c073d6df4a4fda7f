"""A model's components refined on the source grid from the CT values (HU thresholding).

The lung nodule U-Net labels a 2.4 mm grid; resampled to the source pixels its outline is a
staircase and, on some nodules, off by millimetres. Nodule tools refine such an outline from
the image: within the model's component dilated by a margin, a voxel belongs to the object
when its HU is at or above a threshold half-way between the object (solid nodule, about
0-60 HU) and its surroundings (aerated lung, about -850 HU). Of those voxels the parts that
touch the model's component are kept, after an in-plane opening that cuts thin attachments
(vessels, a pleural tag) off at the object; everything else in the margin is not the object.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from gateway.pipelines.findings import SegmentFinding
from gateway.pipelines.measure import STRUCTURE_26, bounding_box


def _ellipsoid(radii_vox: tuple[float, float, float]) -> NDArray[np.bool_]:
    """A (2r+1)^3 ellipsoid structuring element with semi-axes ``radii_vox`` (voxels)."""
    half = [math.floor(r) for r in radii_vox]
    grids = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
    dist2 = sum((g / max(r, 1e-6)) ** 2 for g, r in zip(grids, radii_vox, strict=True))
    return np.asarray(dist2 <= 1.0)


def _disk(radius_vox: tuple[float, float]) -> NDArray[np.bool_]:
    """An in-plane disk (1, 2r+1, 2r+1) with semi-axes ``radius_vox`` (rows, columns)."""
    return _ellipsoid((0.0, *radius_vox))


def refine_by_threshold(
    labels: NDArray[np.uint8],
    hu: NDArray[np.floating] | NDArray[np.integer],
    label: int,
    spacing_mm: tuple[float, float, float],
    threshold_hu: float,
    margin_mm: float,
    opening_mm: float,
    outside_label: int,
) -> NDArray[np.uint8]:
    """``labels`` with each connected component of ``label`` replaced by its refined outline.

    ``spacing_mm``: (slice, row, column) spacing. The margin reaches at least one slice and
    one pixel along each axis. A component with nothing at or above the threshold touching it
    (e.g. a ground-glass opacity below it) keeps the model's outline. Voxels the model labelled
    ``label`` that the refinement leaves out get ``outside_label`` (the lung, for a nodule)."""
    if labels.shape != hu.shape:
        raise ValueError(f"expected HU of the label map's shape {labels.shape}, found {hu.shape}")
    mask = labels == label
    box = bounding_box(mask)
    if box is None:
        return labels
    margin_vox = tuple(max(1.0, margin_mm / s) for s in spacing_mm)
    grow = _ellipsoid((margin_vox[0], margin_vox[1], margin_vox[2]))
    pad = [math.floor(r) for r in margin_vox]
    opening_vox = (opening_mm / spacing_mm[1], opening_mm / spacing_mm[2])
    opener = _disk(opening_vox) if min(opening_vox) >= 1.0 else None
    # everything happens in the label's box grown by the margin: findings are small against
    # a CT volume, and whole-volume passes were most of the time (0.15 s -> 0.03 s)
    outer = _grown(box, pad, labels.shape)
    components = ndimage.label(mask[outer], structure=STRUCTURE_26)[0]
    hu_outer = hu[outer]
    refined = np.zeros(components.shape, dtype=bool)
    for i, inner in enumerate(ndimage.find_objects(components), start=1):
        if inner is None:
            continue
        sl = _grown(inner, pad, components.shape)
        core = components[sl] == i
        region = ndimage.binary_dilation(core, structure=grow)
        solid = region & (hu_outer[sl] >= threshold_hu)
        if opener is not None:
            solid = ndimage.binary_opening(solid, structure=opener)
        parts, _n = ndimage.label(solid)
        keep = np.unique(parts[core & (parts > 0)])
        part = np.isin(parts, keep[keep > 0])
        refined[sl] |= part if part.any() else core
    out = labels.copy()
    out_box = out[outer]  # a view: writes land in `out`
    out_box[(components > 0) & ~refined] = outside_label
    out_box[refined] = label
    return out


def _grown(box: tuple[slice, ...], pad: list[int], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``box`` grown by ``pad`` voxels along each axis, clipped to ``shape``."""
    return tuple(
        slice(max(0, b.start - p), min(n, b.stop + p))
        for b, p, n in zip(box, pad, shape, strict=True)
    )


def most_overlapping(
    model_components: NDArray[np.int32], component: int, ct_components: NDArray[np.int32]
) -> int:
    """The CT component that overlaps the model's `component` most; 0 for none."""
    overlap = ct_components[model_components == component]
    overlap = overlap[overlap > 0]
    return int(np.bincount(overlap).argmax()) if overlap.size else 0


CALIPER_MEASUREMENTS = ("longest_diameter", "long_axis", "short_axis", "mean_diameter")


def caliper_findings(
    of_model: list[SegmentFinding],
    model_components: NDArray[np.int32],
    on_ct: list[SegmentFinding],
    ct_components: NDArray[np.int32],
) -> list[SegmentFinding]:
    """Each finding of the model's label map with its diameters, axes and centre taken from
    the refined component that overlaps it most (its volume and outline stay the model's);
    a finding without one keeps its own."""
    by_label = {f.component_label: f for f in on_ct}
    out = []
    for finding in of_model:
        match = by_label.get(
            most_overlapping(model_components, finding.component_label, ct_components)
        )
        if match is None:
            out.append(finding)
            continue
        measured = {m.name: m for m in match.measurements if m.name in CALIPER_MEASUREMENTS}
        out.append(
            replace(
                finding,
                measurements=tuple(measured.get(m.name, m) for m in finding.measurements),
                axial_axes=match.axial_axes or finding.axial_axes,
            )
        )
    return out
