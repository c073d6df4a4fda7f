"""Label maps to findings: connected components and their measurements (any pipeline)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from gateway.pipelines.findings import Measurement, SegmentFinding

# 26-connectivity in 3D
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)

UNITS = {"volume": "mm3", "longest_diameter": "mm"}


def label_components(labels: NDArray[np.uint8], label: int) -> NDArray[np.int32]:
    """Connected components (26-connected) of one label: 0 outside, 1..n inside.

    Deterministic, so the results writers find each finding's voxels again by its
    ``component_label``."""
    components, _n = ndimage.label(labels == label, structure=STRUCTURE_26)
    return np.asarray(components, dtype=np.int32)


def longest_diameter_mm(points_mm: NDArray[np.float64], max_points: int = 2000) -> float:
    """Largest distance between two points of a set (mm), on the convex hull when large.

    Measured between the points given (voxel centres); callers add a voxel if they want
    the extent.
    """
    pts = points_mm
    if len(pts) > max_points:
        try:
            from scipy.spatial import ConvexHull

            hull = ConvexHull(pts)
            pts = pts[hull.vertices]
        except Exception:
            step = int(np.ceil(len(pts) / max_points))
            pts = pts[::step]
    if len(pts) < 2:
        return 0.0
    best = 0.0
    for start in range(0, len(pts), 512):
        d = pts[start : start + 512, None, :] - pts[None, :, :]
        best = max(best, float(np.sqrt((d**2).sum(-1).max())))
    return best


ToPatient = Callable[[NDArray[np.float64]], NDArray[np.float64]]
"""(N, 3) (slice, row, column) indices -> (N, 3) patient coordinates (LPS, mm)."""


def measure_segment(
    labels: NDArray[np.uint8],
    label: int,
    name: str,
    measurements: Sequence[str],
    voxel_volume_mm3: float,
    pixel_mm: float,
    to_patient: ToPatient,
    components: bool,
    min_voxels: int = 1,
    min_volume_mm3: float = 0.0,
) -> list[SegmentFinding]:
    """Findings of one label: each connected component (ordered by decreasing volume,
    numbered from 1) or the whole label (index 0), with the measurements asked for.

    Volume = voxel count x voxel volume. Longest diameter = largest distance between the
    centres of two boundary voxels plus one in-plane pixel (a sphere of diameter D measures
    about D). Components below ``min_voxels`` or ``min_volume_mm3`` are dropped."""
    whole = (labels == label).astype(np.int32)
    comp = label_components(labels, label) if components else whole
    if not comp.any():
        return []
    found: list[SegmentFinding] = []
    for i, sl in enumerate(ndimage.find_objects(comp), start=1):
        if sl is None:
            continue
        local = comp[sl] == i
        count = int(local.sum())
        if count < min_voxels or count * voxel_volume_mm3 < min_volume_mm3:
            continue
        offset = np.array([s.start for s in sl], dtype=np.float64)
        idx = np.argwhere(local).astype(np.float64) + offset
        centroid_idx = idx.mean(axis=0)
        values: list[Measurement] = []
        for what in measurements:
            if what == "volume":
                value = count * voxel_volume_mm3
            elif what == "longest_diameter":
                eroded = ndimage.binary_erosion(local, structure=STRUCTURE_26, border_value=0)
                edge = np.argwhere(local & ~eroded).astype(np.float64) + offset
                value = longest_diameter_mm(to_patient(edge)) + pixel_mm
            else:
                raise ValueError(f"expected a measurement in {sorted(UNITS)}, found {what!r}")
            values.append(Measurement(what, float(value), UNITS[what]))
        centroid = to_patient(centroid_idx[None, :])[0]
        found.append(
            SegmentFinding(
                label=label,
                name=name,
                index=0,
                component_label=i if components else 0,
                voxel_count=count,
                measurements=tuple(values),
                centroid_patient_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
                centroid_index=(
                    float(centroid_idx[0]),
                    float(centroid_idx[1]),
                    float(centroid_idx[2]),
                ),
                slice_range=(int(sl[0].start), int(sl[0].stop) - 1),
            )
        )
    if not components:
        return found
    found.sort(key=lambda f: -f.voxel_count)
    return [SegmentFinding(**{**f.__dict__, "index": k}) for k, f in enumerate(found, start=1)]


def segment_mask(labels: NDArray[np.uint8], segment: SegmentFinding) -> NDArray[np.bool_]:
    """The voxels of one segment finding."""
    if segment.index == 0:
        return np.asarray(labels == segment.label)
    return np.asarray(label_components(labels, segment.label) == segment.component_label)
