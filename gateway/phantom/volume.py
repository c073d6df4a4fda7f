"""Synthetic chest CT phantoms as numpy volumes (HU and labels), fast and vectorised.

Array axes are (slice, row, column) = (z, y, x). Patient coordinates follow DICOM LPS:
+x towards the patient's left, +y posterior, +z superior (head). Slice index 0 is the most
inferior slice; row 0 is anterior; column 0 is the patient's right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

LABEL_BACKGROUND = 0
LABEL_LUNG = 1
LABEL_NODULE = 2

HU_AIR = -1000
HU_LUNG = -850
HU_FAT = -100
HU_SOFT_TISSUE = 40
HU_BONE = 700


@dataclass(frozen=True)
class Nodule:
    """One synthetic nodule: an ellipsoid, possibly rotated in the axial plane."""

    center_index: tuple[float, float, float]
    """Centre in voxel indices (slice, row, column)."""
    center_mm: tuple[float, float, float]
    """Centre in volume millimetres (z, y, x) from voxel (0, 0, 0)."""
    semi_axes_mm: tuple[float, float, float]
    """Semi-axes in mm along (z, in-plane u, in-plane v)."""
    angle_rad: float
    """Rotation of the in-plane axes (u, v) from the (x, y) axes."""
    hu: int
    voxel_count: int = 0

    @property
    def diameter_mm(self) -> float:
        """Longest diameter of the ellipsoid (mm)."""
        return 2.0 * max(self.semi_axes_mm)

    @property
    def volume_mm3(self) -> float:
        a, b, c = self.semi_axes_mm
        return 4.0 / 3.0 * math.pi * a * b * c

    @property
    def is_sphere(self) -> bool:
        return len(set(self.semi_axes_mm)) == 1


@dataclass
class Phantom:
    """A synthetic chest CT volume with its ground truth."""

    seed: int
    hu: NDArray[np.int16]
    """HU values, shape (slices, rows, columns)."""
    labels: NDArray[np.uint8]
    """0 background, 1 lung, 2 nodule; same shape as ``hu``."""
    spacing: tuple[float, float, float]
    """(slice spacing, row spacing, column spacing) in mm."""
    nodules: list[Nodule] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.hu.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def has_nodule(self) -> bool:
        return any(n.voxel_count > 0 for n in self.nodules)

    @property
    def patient_origin(self) -> tuple[float, float, float]:
        """Patient position (LPS, mm) of voxel (0, 0, 0): the volume is centred on 0."""
        n_z, n_y, n_x = self.shape
        dz, dy, dx = self.spacing
        return (-(n_x - 1) / 2.0 * dx, -(n_y - 1) / 2.0 * dy, -(n_z - 1) / 2.0 * dz)

    def index_to_patient(self, index: tuple[float, float, float]) -> tuple[float, float, float]:
        """Patient position (x, y, z) in mm (LPS) of a (slice, row, column) voxel index."""
        ox, oy, oz = self.patient_origin
        dz, dy, dx = self.spacing
        k, r, c = index
        return (ox + c * dx, oy + r * dy, oz + k * dz)


def _axis_mm(n: int, step: float) -> NDArray[np.float32]:
    """Coordinates (mm) of n voxel centres, centred on 0."""
    return ((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * step).astype(np.float32)


def _ellipse(
    xx: NDArray[np.float32], yy: NDArray[np.float32], cx: float, cy: float, a: float, b: float
) -> NDArray[np.float32]:
    """Normalised squared elliptical radius (<= 1 inside)."""
    return ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2


def make_phantom(
    seed: int,
    shape: tuple[int, int, int] = (64, 512, 512),
    spacing: tuple[float, float, float] | None = None,
    n_nodules: int | None = None,
    nodule_diameter_mm: tuple[float, float] = (3.0, 30.0),
    spheres_only: bool = False,
    noise_hu: float | None = None,
    blur: bool = True,
) -> Phantom:
    """Make a synthetic chest CT phantom.

    Args:
        seed: all randomness derives from it: the same seed gives the same phantom.
        shape: (slices, rows, columns).
        spacing: (slice spacing, row spacing, column spacing) in mm; random (slices 1-5 mm,
            pixels 0.6-0.9 mm, square) when None.
        n_nodules: number of nodules; random 0..3 when None (0 in about 40% of phantoms).
        nodule_diameter_mm: range of nodule diameters (uniform).
        spheres_only: spheres instead of spheres and ellipsoids.
        noise_hu: standard deviation of the Gaussian noise; random 8-25 HU when None.
        blur: apply a small in-plane point spread function before the noise.
    """
    rng = np.random.default_rng(seed)
    n_z, n_y, n_x = shape
    if spacing is None:
        pix = float(rng.uniform(0.6, 0.9))
        spacing = (float(rng.choice([1.0, 1.25, 2.0, 2.5, 3.0, 5.0])), pix, pix)
    dz, dy, dx = (float(s) for s in spacing)
    if n_nodules is None:
        n_nodules = 0 if rng.random() < 0.4 else int(rng.integers(1, 4))
    if noise_hu is None:
        noise_hu = float(rng.uniform(8.0, 25.0))

    z = _axis_mm(n_z, dz)
    y = _axis_mm(n_y, dy)
    x = _axis_mm(n_x, dx)
    yy, xx = np.meshgrid(y, x, indexing="ij")

    # Patient size (mm) and body layout in the axial plane (constant along z, slight taper).
    body_a = float(rng.uniform(135.0, 185.0))  # half width
    body_b = body_a * float(rng.uniform(0.62, 0.75))  # half depth
    body_cy = float(rng.uniform(-10.0, 10.0))
    fat = float(rng.uniform(6.0, 25.0))
    body_r = _ellipse(xx, yy, 0.0, body_cy, body_a, body_b)
    muscle_r = _ellipse(xx, yy, 0.0, body_cy, body_a - fat, body_b - fat)

    # Lungs: two ellipsoids, left and right of the mediastinum.
    lung_a = (body_a - fat) * float(rng.uniform(0.33, 0.38))
    lung_b = (body_b - fat) * float(rng.uniform(0.70, 0.80))
    lung_cx = (body_a - fat) * float(rng.uniform(0.42, 0.48))
    lung_cy = body_cy + float(rng.uniform(-8.0, 4.0))
    lung_h = float(rng.uniform(110.0, 140.0))  # half height
    lung_cz = float(rng.uniform(-20.0, 20.0))
    lung_centres = [(-lung_cx, lung_cy), (lung_cx * float(rng.uniform(0.97, 1.03)), lung_cy)]
    # scale^2 of the axial cross-section along z: dome-shaped ellipsoid
    tz = (z - lung_cz) / lung_h
    lung_s2 = np.clip(1.0 - tz**2, 0.0, None).astype(np.float32)

    lung = np.zeros(shape, dtype=bool)
    lung_r2d = []
    for cx, cy in lung_centres:
        r2d = _ellipse(xx, yy, cx, cy, lung_a, lung_b)
        lung_r2d.append((cx, cy, r2d))
        lung |= r2d[None, :, :] <= lung_s2[:, None, None]

    vol = np.full(shape, float(HU_AIR), dtype=np.float32)
    body2d = body_r <= 1.0
    muscle2d = muscle_r <= 1.0
    vol[:, body2d] = HU_FAT
    vol[:, muscle2d] = HU_SOFT_TISSUE

    # Ribs: partial elliptical annulus inside the fat layer, every ~25 mm along z.
    rib_r_in = _ellipse(xx, yy, 0.0, body_cy, body_a - fat - 14.0, body_b - fat - 14.0)
    rib_ring = (muscle_r <= 1.0) & (rib_r_in > 1.0) & (yy > body_cy - 0.6 * body_b)
    rib_ring &= ~(np.abs(xx) < 25.0)
    rib_period = float(rng.uniform(22.0, 28.0))
    rib_phase = float(rng.uniform(0.0, rib_period))
    rib_z = (np.mod(z + rib_phase, rib_period) < 9.0) & (np.abs(z - lung_cz) < lung_h)
    for k in np.flatnonzero(rib_z):
        vol[k][rib_ring] = HU_BONE

    # Spine (vertebral body with cortical rim) and sternum, constant along z.
    sp_cy = body_cy + (body_b - fat) * 0.62
    sp_r = float(rng.uniform(15.0, 20.0))
    sp_d = np.sqrt((xx) ** 2 + (yy - sp_cy) ** 2)
    vol[:, sp_d <= sp_r] = HU_BONE
    vol[:, sp_d <= sp_r - 3.0] = 300.0
    sternum = (np.abs(xx) < 12.0) & (np.abs(yy - (body_cy - body_b + fat + 10.0)) < 5.0)
    vol[:, sternum] = HU_BONE
    # Aorta and heart (soft tissue, already 40 HU) need no drawing; descending aorta:
    ao = np.sqrt((xx - 25.0) ** 2 + (yy - (sp_cy - sp_r - 14.0)) ** 2) <= 12.0
    vol[:, ao] = 45.0

    # Lungs and their vessels.
    vol[lung] = HU_LUNG
    _draw_vessels(vol, lung, rng, lung_centres, lung_a, lung_b, lung_cz, lung_h, z, y, x)

    labels = np.zeros(shape, dtype=np.uint8)
    labels[lung] = LABEL_LUNG

    nodules = _draw_nodules(
        vol,
        labels,
        lung,
        rng,
        n_nodules,
        nodule_diameter_mm,
        spheres_only,
        (dz, dy, dx),
        shape,
    )

    if blur:
        # A cheap in-plane point spread function: 3-tap binomial along rows and columns.
        v = vol
        v[:, 1:-1, :] = 0.25 * v[:, :-2, :] + 0.5 * v[:, 1:-1, :] + 0.25 * v[:, 2:, :]
        v[:, :, 1:-1] = 0.25 * v[:, :, :-2] + 0.5 * v[:, :, 1:-1] + 0.25 * v[:, :, 2:]
    if noise_hu > 0:
        noise = rng.standard_normal(size=shape, dtype=np.float32)
        noise *= np.float32(noise_hu)
        vol += noise
    np.clip(vol, -1024, 3071, out=vol)
    hu = np.rint(vol).astype(np.int16)
    return Phantom(seed=seed, hu=hu, labels=labels, spacing=(dz, dy, dx), nodules=nodules)


def _draw_vessels(
    vol: NDArray[np.float32],
    lung: NDArray[np.bool_],
    rng: np.random.Generator,
    lung_centres: list[tuple[float, float]],
    lung_a: float,
    lung_b: float,
    lung_cz: float,
    lung_h: float,
    z: NDArray[np.float32],
    y: NDArray[np.float32],
    x: NDArray[np.float32],
) -> None:
    """Tapering tubes (soft tissue) from each hilum outwards, mostly in the axial plane."""
    dz = float(z[1] - z[0]) if len(z) > 1 else 1.0
    dy = float(y[1] - y[0])
    dx = float(x[1] - x[0])
    for cx, cy in lung_centres:
        hilum_x = cx - math.copysign(lung_a * 0.55, cx)
        for _ in range(int(rng.integers(5, 10))):
            p0 = np.array([lung_cz + rng.uniform(-0.3, 0.3) * lung_h, cy, hilum_x], np.float32)
            length = float(rng.uniform(40.0, 90.0))
            theta = float(rng.uniform(0, 2 * math.pi))
            tilt = float(rng.uniform(-0.35, 0.35))  # radians out of the axial plane
            direction = np.array(
                [
                    math.sin(tilt),
                    math.cos(tilt) * math.sin(theta),
                    math.cos(tilt) * math.cos(theta),
                ],
                np.float32,
            )
            if math.copysign(1.0, float(direction[2])) != math.copysign(1.0, cx):
                direction[2] = -direction[2]
            p1 = p0 + direction * length
            r0 = float(rng.uniform(1.5, 3.0))
            r1 = 0.6
            lo = np.minimum(p0, p1) - r0
            hi = np.maximum(p0, p1) + r0
            iz = np.nonzero((z >= lo[0]) & (z <= hi[0]))[0]
            iy = np.nonzero((y >= lo[1]) & (y <= hi[1]))[0]
            ix = np.nonzero((x >= lo[2]) & (x <= hi[2]))[0]
            if len(iz) == 0 or len(iy) == 0 or len(ix) == 0:
                continue
            zz = z[iz][:, None, None]
            yy = y[iy][None, :, None]
            xx = x[ix][None, None, :]
            d = direction
            t = ((zz - p0[0]) * d[0] + (yy - p0[1]) * d[1] + (xx - p0[2]) * d[2]) / length
            t = np.clip(t, 0.0, 1.0)
            qz = zz - (p0[0] + t * length * d[0])
            qy = yy - (p0[1] + t * length * d[1])
            qx = xx - (p0[2] + t * length * d[2])
            dist2 = qz**2 + qy**2 + qx**2
            radius = r0 + (r1 - r0) * t
            inside = dist2 <= radius**2
            sub = np.ix_(iz, iy, ix)
            inside &= lung[sub]
            block = vol[sub]
            block[inside] = HU_SOFT_TISSUE
            vol[sub] = block
    del dz, dy, dx, lung_b


def _draw_nodules(
    vol: NDArray[np.float32],
    labels: NDArray[np.uint8],
    lung: NDArray[np.bool_],
    rng: np.random.Generator,
    n_nodules: int,
    diameter_mm: tuple[float, float],
    spheres_only: bool,
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
) -> list[Nodule]:
    dz, dy, dx = spacing
    nodules: list[Nodule] = []
    # Candidate centres: lung voxels far enough from the lung border (cheap: erode by test).
    lung_idx = np.flatnonzero(lung)
    if n_nodules == 0 or lung_idx.size == 0:
        return nodules
    occupied = np.zeros(shape, dtype=bool)
    attempts = 0
    while len(nodules) < n_nodules and attempts < 200:
        attempts += 1
        diam = float(rng.uniform(*diameter_mm))
        if spheres_only or rng.random() < 0.5:
            semi = (diam / 2, diam / 2, diam / 2)
            angle = 0.0
        else:
            ratios = rng.uniform(0.6, 1.0, size=2)
            semi = (diam / 2 * float(ratios[0]), diam / 2, diam / 2 * float(ratios[1]))
            angle = float(rng.uniform(0, math.pi))
        flat = int(lung_idx[int(rng.integers(lung_idx.size))])
        cz, cy, cx = np.unravel_index(flat, shape)
        # Bounding box (voxels) of the ellipsoid, clipped to the volume.
        r_max = max(semi)
        hz = math.ceil(semi[0] / dz) + 1
        hy = math.ceil(r_max / dy) + 1
        hx = math.ceil(r_max / dx) + 1
        z0, z1 = cz - hz, cz + hz + 1
        y0, y1 = cy - hy, cy + hy + 1
        x0, x1 = cx - hx, cx + hx + 1
        if z0 < 0 or y0 < 0 or x0 < 0 or z1 > shape[0] or y1 > shape[1] or x1 > shape[2]:
            continue
        # Centre slightly off the voxel grid in-plane; on a slice centre along z so that
        # thin nodules appear on at least one slice.
        off_y = float(rng.uniform(-0.5, 0.5))
        off_x = float(rng.uniform(-0.5, 0.5))
        zz = (np.arange(z0, z1, dtype=np.float32) - cz)[:, None, None] * dz
        yy = (np.arange(y0, y1, dtype=np.float32) - cy - off_y)[None, :, None] * dy
        xx = (np.arange(x0, x1, dtype=np.float32) - cx - off_x)[None, None, :] * dx
        ca, sa = math.cos(angle), math.sin(angle)
        u = xx * ca + yy * sa
        v = -xx * sa + yy * ca
        inside = (zz / semi[0]) ** 2 + (u / semi[1]) ** 2 + (v / semi[2]) ** 2 <= 1.0
        sub = (slice(z0, z1), slice(y0, y1), slice(x0, x1))
        # Whole nodule (with a 2 mm margin) inside the lung, not touching another nodule.
        margin = (zz / (semi[0] + 2.0)) ** 2 + (u / (semi[1] + 2.0)) ** 2 + (
            v / (semi[2] + 2.0)
        ) ** 2 <= 1.0
        if not np.all(lung[sub][margin]) or np.any(occupied[sub][margin]):
            continue
        hu = int(rng.integers(20, 60))
        block = vol[sub]
        block[inside] = hu
        vol[sub] = block
        lab = labels[sub]
        lab[inside] = LABEL_NODULE
        labels[sub] = lab
        occ = occupied[sub]
        occ |= margin
        occupied[sub] = occ
        nodules.append(
            Nodule(
                center_index=(float(cz), float(cy) + off_y, float(cx) + off_x),
                center_mm=(float(cz) * dz, (float(cy) + off_y) * dy, (float(cx) + off_x) * dx),
                semi_axes_mm=semi,
                angle_rad=angle,
                hu=hu,
                voxel_count=int(np.count_nonzero(inside)),
            )
        )
    return nodules
