"""A slice's mask as closed outlines in image pixel coordinates, for the viewer forms (GSPS
graphics, burned-in key images).

Coordinates are (column, row) with (0, 0) at the top left corner of the top left pixel, the
convention of GSPS PIXEL units and SR SCOORD: pixel (r, c) spans [c, c+1] x [r, r+1]. Each
outline runs through the middle of the pixel edges between inside and outside (the 0.5
iso-contour of the mask, as the measurements see the boundary), so it neither grows nor
shrinks the finding. Pixels that touch at a corner belong to one outline (8-connected);
holes are not drawn.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

# An edge is (x0, y0, x1, y1), directed so that the inside lies to its right on screen
# (y down): outer boundaries run clockwise, holes counter-clockwise.
_Edge = tuple[int, int, int, int]


def _boundary_edges(mask: NDArray[np.bool_]) -> list[_Edge]:
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1]
    edges: list[_Edge] = []
    # neighbour above/right/below/left outside: that side of the pixel is on the boundary
    for (dr, dc), (x0, y0, x1, y1) in (
        ((-1, 0), (0, 0, 1, 0)),  # top, left to right
        ((0, 1), (1, 0, 1, 1)),  # right, downwards
        ((1, 0), (1, 1, 0, 1)),  # bottom, right to left
        ((0, -1), (0, 1, 0, 0)),  # left, upwards
    ):
        neighbour = padded[1 + dr : padded.shape[0] - 1 + dr, 1 + dc : padded.shape[1] - 1 + dc]
        rows, cols = np.nonzero(inside & ~neighbour)
        edges.extend(
            (int(c) + x0, int(r) + y0, int(c) + x1, int(r) + y1)
            for r, c in zip(rows, cols, strict=True)
        )
    return edges


def _loops(edges: list[_Edge]) -> list[list[_Edge]]:
    """The edges chained into closed loops. Where two pixels touch only at a corner, two
    edges leave that corner: the one turning towards the other pixel is taken, so both
    pixels share one loop (8-connectivity)."""
    leaving: dict[tuple[int, int], list[_Edge]] = {}
    for edge in edges:
        leaving.setdefault((edge[0], edge[1]), []).append(edge)

    def successor(edge: _Edge) -> _Edge:
        options = leaving[(edge[2], edge[3])]
        if len(options) == 1:
            return options[0]
        dx, dy = edge[2] - edge[0], edge[3] - edge[1]
        # turn whose cross product (incoming x outgoing, y down) is negative
        return next(o for o in options if dx * (o[3] - o[1]) - dy * (o[2] - o[0]) < 0)

    loops: list[list[_Edge]] = []
    used: set[_Edge] = set()
    for first in edges:
        if first in used:
            continue
        loop = [first]
        used.add(first)
        edge = successor(first)
        while edge != first:
            loop.append(edge)
            used.add(edge)
            edge = successor(edge)
        loops.append(loop)
    return loops


def _signed_area(points: NDArray[np.float64]) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _without_collinear(points: NDArray[np.float64]) -> NDArray[np.float64]:
    before, after = np.roll(points, 1, axis=0), np.roll(points, -1, axis=0)
    d1, d2 = points - before, after - points
    turn = np.abs(d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0]) > 1e-9
    return points[turn] if turn.sum() >= 3 else points


def mask_outlines(mask: NDArray[np.bool_]) -> list[NDArray[np.float64]]:
    """The outer outlines of a 2D mask (rows, columns), largest first: each an (N, 2) array
    of (column, row) points, closed (the last point repeats the first)."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2D mask (rows, columns), found shape {mask.shape}")
    found = np.argwhere(mask)
    if len(found) == 0:
        return []
    (r0, c0), (r1, c1) = found.min(axis=0), found.max(axis=0) + 1
    offset = np.array([c0, r0], dtype=np.float64)
    outlines: list[tuple[float, NDArray[np.float64]]] = []
    for loop in _loops(_boundary_edges(np.asarray(mask[r0:r1, c0:c1], dtype=bool))):
        edges = np.array(loop, dtype=np.float64)
        middles = 0.5 * (edges[:, :2] + edges[:, 2:])
        area = _signed_area(middles)
        if area <= 0:  # a hole (counter-clockwise)
            continue
        points = _without_collinear(middles) + offset
        outlines.append((area, np.vstack([points, points[:1]])))
    outlines.sort(key=lambda found: -found[0])
    return [points for _, points in outlines]


def polygon_centroid(closed: NDArray[np.float64]) -> NDArray[np.float64]:
    """Area centroid (column, row) of a closed outline."""
    x, y = closed[:-1, 0], closed[:-1, 1]
    xn, yn = closed[1:, 0], closed[1:, 1]
    cross = x * yn - xn * y
    area = 0.5 * float(cross.sum())
    if abs(area) < 1e-12:
        return np.asarray(closed[:-1].mean(axis=0), dtype=np.float64)
    return np.array([float(((x + xn) * cross).sum()), float(((y + yn) * cross).sum())]) / (
        6.0 * area
    )
