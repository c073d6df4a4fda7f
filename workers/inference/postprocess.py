"""Label maps to measurements: connected components, volume, diameter, centroid."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from workers.inference.findings import LABEL_NODULE, NoduleFinding
from workers.inference.series import Volume

# 26-connectivity in 3D
_STRUCTURE = np.ones((3, 3, 3), dtype=bool)


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


# Smallest reported nodule: a sphere of 3 mm diameter.
MIN_NODULE_VOLUME_MM3 = 4.0 / 3.0 * np.pi * 1.5**3


def nodule_components(labels: NDArray[np.uint8]) -> NDArray[np.int32]:
    """Connected components (26-connected) of the nodule label: 0 outside, 1..n inside.

    Deterministic, so the results builders find each finding's voxels again by its
    ``component_label``."""
    components, _n = ndimage.label(labels == LABEL_NODULE, structure=_STRUCTURE)
    return np.asarray(components, dtype=np.int32)


def measure_nodules(
    labels: NDArray[np.uint8],
    volume: Volume,
    min_voxels: int = 3,
    min_volume_mm3: float = MIN_NODULE_VOLUME_MM3,
) -> list[NoduleFinding]:
    """Connected components of the nodule label with their measurements.

    Volume = voxel count x voxel volume. Longest diameter = largest distance between the
    centres of two voxels of the component, plus one in-plane pixel (so that a sphere of
    diameter D measures about D). Components smaller than ``min_voxels`` voxels or
    ``min_volume_mm3`` are dropped.
    """
    comp = nodule_components(labels)
    if not comp.any():
        return []
    objects = ndimage.find_objects(comp)
    results: list[tuple[int, NoduleFinding]] = []
    pixel = float(np.mean(volume.pixel_spacing))
    for i, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        local = comp[sl] == i
        count = int(local.sum())
        if count < min_voxels or count * volume.voxel_volume_mm3 < min_volume_mm3:
            continue
        idx = np.argwhere(local).astype(np.float64)
        idx += np.array([s.start for s in sl], dtype=np.float64)
        centroid_idx = idx.mean(axis=0)
        # boundary voxels only (cheaper diameter)
        eroded = ndimage.binary_erosion(local, structure=_STRUCTURE, border_value=0)
        edge = np.argwhere(local & ~eroded).astype(np.float64)
        edge += np.array([s.start for s in sl], dtype=np.float64)
        diameter = longest_diameter_mm(volume.index_to_patient(edge)) + pixel
        centroid = volume.index_to_patient(centroid_idx[None, :])[0]
        results.append(
            (
                count,
                NoduleFinding(
                    index=0,
                    voxel_count=count,
                    volume_mm3=count * volume.voxel_volume_mm3,
                    longest_diameter_mm=diameter,
                    centroid_patient_mm=(
                        float(centroid[0]),
                        float(centroid[1]),
                        float(centroid[2]),
                    ),
                    centroid_index=(
                        float(centroid_idx[0]),
                        float(centroid_idx[1]),
                        float(centroid_idx[2]),
                    ),
                    slice_range=(int(sl[0].start), int(sl[0].stop) - 1),
                    component_label=i,
                ),
            )
        )
    results.sort(key=lambda r: -r[0])
    out = []
    for k, (_, f) in enumerate(results, start=1):
        out.append(
            NoduleFinding(
                index=k,
                voxel_count=f.voxel_count,
                volume_mm3=f.volume_mm3,
                longest_diameter_mm=f.longest_diameter_mm,
                centroid_patient_mm=f.centroid_patient_mm,
                centroid_index=f.centroid_index,
                slice_range=f.slice_range,
                component_label=f.component_label,
            )
        )
    return out
