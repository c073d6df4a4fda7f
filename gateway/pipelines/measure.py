"""Label maps to findings: connected components and their measurements (any pipeline).

Diameters are measured on the object's boundary, not between voxel centres: the boundary is
the 0.5 iso-contour of the mask, smoothed in plane at half the resolution the label map was
made at (``resolution_mm``: the grid of the model that labelled it, or the pixel spacing).
A label map is a staircase at that resolution (the lung nodule U-Net labels a 2.4 mm grid,
resampled to the source pixels); a diameter, the largest distance across, picks the corners
of the staircase, which put today's diameters 10-20 % above the truth. The smoothed
contour runs through the middle of the steps, between the voxels inside and outside.

- ``long_axis``: the longest in-plane diameter on the slice with the largest cross-section
  (Lung-RADS, Fleischner: measured on the axial image where the nodule is largest), mm.
- ``short_axis``: the longest diameter perpendicular to the long axis on that slice, mm.
- ``mean_diameter``: their mean, rounded to 0.1 mm (Lung-RADS v2022).
- ``longest_diameter``: the longest distance across the boundary in 3D, mm.
- ``volume``: voxel count x voxel volume, mm3.

Both axes are measured on the convex hull of the contour (what calipers span), and their end
points are kept in patient coordinates with the slice they lie on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from gateway.pipelines.findings import AxialAxes, Measurement, SegmentFinding

# 26-connectivity in 3D
STRUCTURE_26 = np.ones((3, 3, 3), dtype=bool)

UNITS = {
    "volume": "mm3",
    "longest_diameter": "mm",
    "long_axis": "mm",
    "short_axis": "mm",
    "mean_diameter": "mm",
}
AXIAL = frozenset({"long_axis", "short_axis", "mean_diameter"})


def bounding_box(mask: NDArray[np.bool_]) -> tuple[slice, ...] | None:
    """The smallest box holding every True voxel of ``mask``; None when there is none."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)


def boxed_components(
    labels: NDArray[np.uint8], label: int
) -> tuple[tuple[slice, ...], NDArray[np.int32]] | None:
    """The label's bounding box and its connected components (26-connected) inside it: 0
    outside the label, 1..n inside; None when the label has no voxel."""
    mask = labels == label
    box = bounding_box(mask)
    if box is None:
        return None
    return box, ndimage.label(mask[box], structure=STRUCTURE_26)[0]


def label_components(labels: NDArray[np.uint8], label: int) -> NDArray[np.int32]:
    """Connected components (26-connected) of one label: 0 outside, 1..n inside.

    Deterministic, so the results writers find each finding's voxels again by its
    ``component_label``. Labelled inside the label's bounding box only: findings are small
    against a CT volume (100x512x512 took 0.12 s whole), and a box keeps the raster order
    that numbers the components, so the numbers are the same."""
    components = np.zeros(labels.shape, dtype=np.int32)
    if (boxed := boxed_components(labels, label)) is not None:
        box, local = boxed
        components[box] = local
    return components


def _hull(points: NDArray[np.float64]) -> NDArray[np.float64]:
    """The convex hull's vertices, in order around it (2D); the points when degenerate."""
    if len(points) < 3:
        return points
    try:
        return points[ConvexHull(points).vertices]
    except QhullError:  # collinear points: the extremes are among them
        return points


def _farthest_pair(pts: NDArray[np.float64]) -> tuple[int, int, float]:
    best = (0, 0, 0.0)
    for start in range(0, len(pts), 512):
        d2 = ((pts[start : start + 512, None, :] - pts[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(d2.argmax()), d2.shape)
        if d2[i, j] > best[2] ** 2:
            best = (start + int(i), int(j), float(np.sqrt(d2[i, j])))
    return best


def longest_diameter_mm(points_mm: NDArray[np.float64], max_points: int = 2000) -> float:
    """Largest distance between two points of a set (mm), on the convex hull when large."""
    pts = points_mm
    if len(pts) > max_points:
        try:
            pts = pts[ConvexHull(pts).vertices]
        except QhullError:
            pts = pts[:: int(np.ceil(len(pts) / max_points))]
    if len(pts) < 2:
        return 0.0
    return _farthest_pair(pts)[2]


def boundary_points(
    field: NDArray[np.float64], level: float = 0.5, axes: Sequence[int] | None = None
) -> NDArray[np.float64]:
    """Where ``field`` crosses ``level`` between neighbours along each of ``axes`` (default
    all), linearly interpolated: the vertices of its iso-contour (marching squares), as float
    indices. For a binary mask at 0.5: the middle of each face between a voxel inside and one
    outside."""
    found = []
    for axis in range(field.ndim) if axes is None else axes:
        a = np.moveaxis(field, axis, 0)
        lo, hi = a[:-1], a[1:]
        cross = (lo - level) * (hi - level) < 0
        idx = np.argwhere(cross).astype(np.float64)
        idx[:, 0] += (level - lo[cross]) / (hi[cross] - lo[cross])
        moved = [axis] + [d for d in range(field.ndim) if d != axis]
        back = np.empty_like(idx)
        back[:, moved] = idx
        found.append(back)
    return np.concatenate(found) if found else np.zeros((0, field.ndim))


def _smoothed(mask: NDArray[np.bool_], sigma_px: float) -> NDArray[np.float64]:
    """The mask as a float field, blurred in plane (rows, columns) by ``sigma_px``, padded so
    that its contour closes."""
    field = np.pad(mask.astype(np.float64), [(1, 1)] * mask.ndim)
    if sigma_px <= 0:
        return field
    sigma = [0.0] * (mask.ndim - 2) + [sigma_px, sigma_px]
    return np.asarray(ndimage.gaussian_filter(field, sigma, mode="constant"), dtype=np.float64)


def _chord(hull_uv: NDArray[np.float64], u: float) -> tuple[float, float] | None:
    """The hull's extent (v_min, v_max) along the line at ``u`` (hull vertices in order)."""
    nxt = np.roll(hull_uv, -1, axis=0)
    u1, u2 = hull_uv[:, 0], nxt[:, 0]
    span = (u1 - u) * (u2 - u) <= 0
    span &= u1 != u2
    if not span.any():
        return None
    t = (u - u1[span]) / (u2[span] - u1[span])
    v = hull_uv[span, 1] + t * (nxt[span, 1] - hull_uv[span, 1])
    return float(v.min()), float(v.max())


def axes_in_plane(
    points_mm: NDArray[np.float64],
) -> tuple[float, float, NDArray[np.float64], NDArray[np.float64]]:
    """Long and short axis of a planar contour (2D points, mm): the longest distance across
    its convex hull, and the longest chord of the hull perpendicular to it. Returns both
    lengths and their end points (2, 2)."""
    hull = _hull(points_mm)
    if len(hull) < 2:
        zero = np.repeat(points_mm[:1], 2, axis=0) if len(points_mm) else np.zeros((2, 2))
        return 0.0, 0.0, zero, zero
    i, j, long_mm = _farthest_pair(hull)
    a, b = hull[i], hull[j]
    u = (b - a) / long_mm
    v = np.array([-u[1], u[0]])
    uv = np.stack([(hull - a) @ u, (hull - a) @ v], axis=1)
    # The chord length is concave along u on a convex polygon: largest at a vertex.
    best = (0.0, 0.0, 0.0, 0.0)
    for at in uv[:, 0]:
        chord = _chord(uv, float(at))
        if chord is not None and chord[1] - chord[0] > best[0]:
            best = (chord[1] - chord[0], float(at), chord[0], chord[1])
    short_mm, at, v0, v1 = best
    short = np.stack([a + at * u + v0 * v, a + at * u + v1 * v])
    return long_mm, short_mm, np.stack([a, b]), short


ToPatient = Callable[[NDArray[np.float64]], NDArray[np.float64]]
"""(N, 3) (slice, row, column) indices -> (N, 3) patient coordinates (LPS, mm)."""


def _axial_axes(
    local: NDArray[np.bool_],
    offset: NDArray[np.float64],
    pixel_mm: tuple[float, float],
    sigma_px: float,
    to_patient: ToPatient,
    sop_instance_uids: Sequence[str] | None,
) -> AxialAxes:
    """Long and short axis on the slice with the largest cross-section (the one nearest the
    middle of the object on a tie)."""
    areas = local.sum(axis=(1, 2))
    middle = (len(areas) - 1) / 2.0
    k = max(range(len(areas)), key=lambda s: (areas[s], -abs(s - middle)))
    field = _smoothed(local[k], sigma_px)
    rc = boundary_points(field) - 1.0  # undo the padding
    scale = np.array(pixel_mm)
    long_mm, short_mm, long_rc, short_rc = axes_in_plane(rc * scale)
    slice_index = int(offset[0]) + k

    def patient(points_mm: NDArray[np.float64]) -> tuple[tuple[float, float, float], ...]:
        idx = np.column_stack(
            [np.full(len(points_mm), float(slice_index)), points_mm / scale + offset[1:]]
        )
        return tuple((float(x), float(y), float(z)) for x, y, z in to_patient(idx))

    uid = "" if sop_instance_uids is None else sop_instance_uids[slice_index]
    return AxialAxes(
        slice_index=slice_index,
        sop_instance_uid=uid,
        long_axis_mm=long_mm,
        short_axis_mm=short_mm,
        long_axis_points=patient(long_rc),
        short_axis_points=patient(short_rc),
    )


def measure_segment(
    labels: NDArray[np.uint8],
    label: int,
    name: str,
    measurements: Sequence[str],
    voxel_volume_mm3: float,
    pixel_mm: float | tuple[float, float],
    to_patient: ToPatient,
    components: bool,
    min_voxels: int = 1,
    min_volume_mm3: float = 0.0,
    resolution_mm: float | None = None,
    sop_instance_uids: Sequence[str] | None = None,
) -> list[SegmentFinding]:
    """Findings of one label: each connected component (ordered by decreasing volume,
    numbered from 1) or the whole label (index 0), with the measurements asked for (see the
    module's docstring). ``pixel_mm``: (row, column) spacing (or one for both);
    ``resolution_mm``: the in-plane resolution the label map was made at (default: the
    pixel spacing); ``sop_instance_uids``: of the slices, to name the slice of the axes.
    Components below ``min_voxels`` or ``min_volume_mm3`` are dropped."""
    unknown = [m for m in measurements if m not in UNITS]
    if unknown:
        raise ValueError(f"expected measurements in {sorted(UNITS)}, found {unknown}")
    pixel = (pixel_mm, pixel_mm) if isinstance(pixel_mm, int | float) else pixel_mm
    pixel = (float(pixel[0]), float(pixel[1]))
    # Blur at half the resolution, in pixels of the (near square) source grid.
    sigma_px = 0.5 * (resolution_mm or min(pixel)) / float(np.mean(pixel))
    mask = labels == label
    box = bounding_box(mask)
    if box is None:
        return []
    # Everything below works inside the label's box; `corner` takes it back to the volume.
    corner = np.array([b.start for b in box], dtype=np.float64)
    in_box = mask[box]
    comp = (
        ndimage.label(in_box, structure=STRUCTURE_26)[0] if components else in_box.astype(np.int32)
    )
    found: list[SegmentFinding] = []
    for i, sl in enumerate(ndimage.find_objects(comp), start=1):
        if sl is None:
            continue
        local = comp[sl] == i
        count = int(local.sum())
        if count < min_voxels or count * voxel_volume_mm3 < min_volume_mm3:
            continue
        offset = np.array([s.start for s in sl], dtype=np.float64) + corner
        centroid_idx = np.argwhere(local).mean(axis=0) + offset
        axes = None
        if AXIAL.intersection(measurements):
            axes = _axial_axes(local, offset, pixel, sigma_px, to_patient, sop_instance_uids)
        values: list[Measurement] = []
        for what in measurements:
            if what == "volume":
                value = count * voxel_volume_mm3
            elif what == "longest_diameter":
                # In-plane contours of each slice, at the slice centres: a thick slice's
                # half beyond the last one holding the object would add up to a slice.
                field = _smoothed(local, sigma_px)[1:-1]
                edge = boundary_points(field, axes=(1, 2)) - np.array([0.0, 1.0, 1.0]) + offset
                value = longest_diameter_mm(to_patient(edge))
            else:
                assert axes is not None
                value = axes.value(what)
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
                slice_range=(int(offset[0]), int(offset[0]) + local.shape[0] - 1),
                axial_axes=axes,
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
    mask = np.zeros(labels.shape, dtype=bool)
    if (boxed := boxed_components(labels, segment.label)) is not None:
        box, local = boxed
        mask[box] = local == segment.component_label
    return mask
