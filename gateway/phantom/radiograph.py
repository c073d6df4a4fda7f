"""Digitally reconstructed chest radiographs (DRR) from the synthetic chest CT phantoms.

The phantom (``gateway.phantom.volume``) is made on a coarse CT grid, its HU converted to
linear attenuation, and the attenuation summed along the antero-posterior axis in slabs;
each slab is magnified by the source-to-detector over source-to-slab distance of its depth
(point source, detector in front of the patient for PA, behind for AP), so the anterior
mediastinum and the nodules are magnified as in a real PA or AP radiograph. The projection is
made on a ~1.2 mm detector grid and resampled to the requested image size; scatter,
quantum noise, the logarithm and a presentation tone curve are applied at full size.

Image axes: row 0 is superior (head), rows increase towards the feet; columns increase
towards the patient's left (PatientOrientation ``L\\F``, the usual display of PA and AP
chest radiographs), or towards the patient's right for a mirrored image (``R\\F``).
Patient coordinates are DICOM LPS millimetres as in ``gateway.phantom.volume``.

Everything derives from the seed: the same seed and arguments give the same radiograph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter

from gateway.phantom.volume import Phantom, make_phantom

ViewPosition = Literal["PA", "AP"]
Photometric = Literal["MONOCHROME1", "MONOCHROME2"]

MU_WATER_PER_MM = 0.02
"""Linear attenuation of water at a chest radiograph's effective energy (~60 keV), 1/mm."""
CT_SHAPE = (136, 224, 224)
CT_SPACING_MM = (3.0, 1.8, 1.8)
"""The phantom's grid for projection: 408 x 403 x 403 mm, coarse because it is projected."""
DETECTOR_GRID_MM = 1.2
"""Spacing of the detector grid the projection is computed on before resampling."""
SLAB_VOXELS = 8
"""Voxels per slab along the beam: each slab gets the magnification of its mid-depth."""
NODULE_DIAMETER_MM = (8.0, 30.0)
"""Default nodule sizes: a radiograph shows nodules from about 8-10 mm on."""


@dataclass(frozen=True)
class ProjectedNodule:
    """Ground truth of one nodule on the radiograph."""

    row: float
    """Centre, pixel row of the image (0 = centre of the first pixel)."""
    column: float
    """Centre, pixel column of the image."""
    radius_px: float
    """Largest semi-axis, magnified to the detector plane, in pixels."""
    diameter_mm: float
    """True (unmagnified) largest diameter."""
    magnification: float
    """Source-to-detector over source-to-nodule distance."""


@dataclass(frozen=True)
class Geometry:
    """Projection geometry of one radiograph."""

    view_position: ViewPosition
    source_to_detector_mm: float
    detector_gap_mm: float
    """Distance from the body surface nearest the detector to the detector."""
    central_ray_mm: tuple[float, float]
    """Patient (x, z) of the central ray, which meets the detector at the image centre."""
    rows: int
    columns: int
    spacing_mm: float
    """Pixel spacing at the detector plane (DICOM ImagerPixelSpacing), square pixels."""
    mirrored: bool
    """Columns increase towards the patient's right (PatientOrientation R\\F)."""


@dataclass(frozen=True)
class Exposure:
    """Detector signal and presentation of one radiograph."""

    photons_per_mm2: float | None
    """Unattenuated photon fluence at the detector; None: no quantum noise."""
    scatter_to_primary: float
    """Scatter as a fraction of the mean primary signal (smooth)."""
    gamma: float
    """Exponent of the presentation tone curve."""
    bits_stored: int
    photometric_interpretation: Photometric


@dataclass
class Radiograph:
    """A synthetic chest radiograph with its ground truth."""

    seed: int
    pixels: NDArray[np.uint16]
    """Stored pixel values (rows, columns), as written to DICOM."""
    geometry: Geometry
    exposure: Exposure
    nodules: list[ProjectedNodule] = field(default_factory=list)
    magnification: float = 1.0
    """Magnification at the middle of the body (DICOM EstimatedRadiographicMagnificationFactor)."""

    @property
    def has_nodule(self) -> bool:
        return bool(self.nodules)

    @property
    def pixel_spacing(self) -> tuple[float, float]:
        """(row, column) spacing in mm at the detector plane."""
        return (self.geometry.spacing_mm, self.geometry.spacing_mm)

    @property
    def patient_orientation(self) -> tuple[str, str]:
        return ("R" if self.geometry.mirrored else "L", "F")

    @property
    def max_value(self) -> int:
        return (1 << self.exposure.bits_stored) - 1


def chest_phantom(
    seed: int,
    n_nodules: int | None = None,
    nodule_diameter_mm: tuple[float, float] = NODULE_DIAMETER_MM,
) -> Phantom:
    """The CT phantom a radiograph is projected from: no CT noise (the sum would average it
    out); ``n_nodules`` None: none on about half the seeds, else 1-3."""
    if n_nodules is None:
        rng = np.random.default_rng([seed, 16])
        n_nodules = 0 if rng.random() < 0.5 else int(rng.integers(1, 4))
    return make_phantom(
        seed,
        shape=CT_SHAPE,
        spacing=CT_SPACING_MM,
        n_nodules=n_nodules,
        nodule_diameter_mm=nodule_diameter_mm,
        noise_hu=0.0,
    )


def random_geometry(
    rng: np.random.Generator,
    phantom: Phantom,
    view_position: ViewPosition | None = None,
    long_side_px: int | None = None,
    mirrored: bool | None = None,
) -> Geometry:
    """A PA (1.7-1.9 m, chest on the detector) or AP (portable, 1.0-1.2 m) geometry; a
    35 x 43, 43 x 35 or 43 x 43 cm detector of 0.139-0.2 mm pixels, downsampled to a long
    side of 1024-2500 pixels (or ``long_side_px``)."""
    view: ViewPosition = view_position or ("PA" if rng.random() < 0.5 else "AP")
    if view == "PA":
        sid = float(rng.uniform(1700.0, 1900.0))
        gap = float(rng.uniform(10.0, 30.0))
    else:
        sid = float(rng.uniform(1000.0, 1200.0))
        gap = float(rng.uniform(20.0, 60.0))
    height, width = [(430.0, 350.0), (350.0, 430.0), (430.0, 430.0)][int(rng.integers(3))]
    long_mm = max(height, width)
    if long_side_px is None:
        pitch = float(rng.choice([0.139, 0.143, 0.148, 0.16, 0.175, 0.2]))
        native = long_mm / pitch
        factors = [f for f in (1.0, 1.25, 1.5, 2.0, 2.5, 3.0) if 1024 <= native / f <= 2500]
        long_side_px = round(native / float(rng.choice(factors)))
    spacing = long_mm / long_side_px
    lung_k = np.flatnonzero(phantom.labels.any(axis=(1, 2)))
    _, _, oz = phantom.patient_origin
    lung_z = oz + 0.5 * (lung_k[0] + lung_k[-1]) * phantom.spacing[0] if lung_k.size else 0.0
    x0 = float(rng.uniform(-15.0, 15.0))
    z0 = float(lung_z + rng.uniform(-25.0, 25.0))
    return Geometry(
        view_position=view,
        source_to_detector_mm=sid,
        detector_gap_mm=gap,
        central_ray_mm=(x0, z0),
        rows=round(height / spacing),
        columns=round(width / spacing),
        spacing_mm=spacing,
        mirrored=bool(rng.random() < 0.25) if mirrored is None else mirrored,
    )


def random_exposure(
    rng: np.random.Generator, photometric: Photometric | None = None, noise: bool = True
) -> Exposure:
    return Exposure(
        photons_per_mm2=float(math.exp(rng.uniform(math.log(3e3), math.log(5e4))))
        if noise
        else None,
        scatter_to_primary=float(rng.uniform(0.1, 0.6)),
        gamma=float(rng.uniform(0.7, 1.4)),
        bits_stored=int(rng.choice([12, 14, 16])),
        photometric_interpretation=photometric
        or ("MONOCHROME1" if rng.random() < 0.5 else "MONOCHROME2"),
    )


def _depth_range(phantom: Phantom) -> tuple[float, float]:
    """Patient y (mm) of the most anterior and most posterior body voxel."""
    rows = np.flatnonzero((phantom.hu > -500).any(axis=(0, 2)))
    _, oy, _ = phantom.patient_origin
    dy = phantom.spacing[1]
    return (oy + rows[0] * dy, oy + rows[-1] * dy)


def _distance_to_detector(
    y: float | NDArray[np.floating[Any]], geometry: Geometry, body: tuple[float, float]
) -> NDArray[np.float64]:
    """Distance (mm) from patient depth y to the detector: anterior detector for PA."""
    yy = np.asarray(y, dtype=np.float64)
    if geometry.view_position == "PA":
        return yy - body[0] + geometry.detector_gap_mm
    return body[1] - yy + geometry.detector_gap_mm


def _magnification(d: NDArray[np.float64], geometry: Geometry) -> NDArray[np.float64]:
    sid = geometry.source_to_detector_mm
    return sid / (sid - d)


def _interp_axis(
    src: NDArray[np.float32], pos: NDArray[np.floating[Any]], axis: int
) -> NDArray[np.float32]:
    """Linear interpolation of ``src`` along ``axis`` at fractional indices (clamped)."""
    n = src.shape[axis]
    p = np.clip(pos, 0.0, n - 1.0)
    i0 = np.floor(p).astype(np.intp)
    i1 = np.minimum(i0 + 1, n - 1)
    w = (p - i0).astype(np.float32)
    a = np.take(src, i0, axis=axis)
    b = np.take(src, i1, axis=axis)
    shape = [1] * src.ndim
    shape[axis] = len(pos)
    return (a + (b - a) * w.reshape(shape)).astype(np.float32, copy=False)


def detector_grid(geometry: Geometry) -> tuple[int, int, float]:
    """(rows, columns, spacing) of the coarse grid the projection is computed on: the
    image's field of view, same centre, spacing about ``DETECTOR_GRID_MM``."""
    step = max(DETECTOR_GRID_MM, geometry.spacing_mm)
    return (
        max(2, round(geometry.rows * geometry.spacing_mm / step)),
        max(2, round(geometry.columns * geometry.spacing_mm / step)),
        step,
    )


def line_integrals(phantom: Phantom, geometry: Geometry) -> NDArray[np.float32]:
    """Attenuation line integrals (dimensionless) on the coarse detector grid."""
    n_z, n_y, n_x = phantom.shape
    dz, dy, dx = phantom.spacing
    ox, oy, oz = phantom.patient_origin
    mu = np.clip(phantom.hu.astype(np.float32) / 1000.0 + 1.0, 0.0, None)
    mu *= np.float32(MU_WATER_PER_MM * dy)
    n_slab = math.ceil(n_y / SLAB_VOXELS)
    pad = n_slab * SLAB_VOXELS - n_y
    if pad:
        mu = np.pad(mu, ((0, 0), (0, pad), (0, 0)))
    slabs = mu.reshape(n_z, n_slab, SLAB_VOXELS, n_x).sum(axis=2)  # (z, slab, x)
    slab_y = oy + (np.arange(n_slab) * SLAB_VOXELS + (SLAB_VOXELS - 1) / 2.0) * dy
    body = _depth_range(phantom)
    mags = _magnification(_distance_to_detector(slab_y, geometry, body), geometry)

    g_rows, g_cols, step = detector_grid(geometry)
    x0, z0 = geometry.central_ray_mm
    sx = -1.0 if geometry.mirrored else 1.0
    u_off = sx * (np.arange(g_cols) - (g_cols - 1) / 2.0) * step  # u - x0 per column
    v_off = -(np.arange(g_rows) - (g_rows - 1) / 2.0) * step  # v - z0 per row
    out = np.zeros((g_rows, g_cols), np.float32)
    for s in range(n_slab):
        if not slabs[:, s].any():
            continue
        m = float(mags[s])
        k = (z0 + v_off / m - oz) / dz
        c = (x0 + u_off / m - ox) / dx
        out += _interp_axis(_interp_axis(slabs[:, s], k, 0), c, 1)
    return out


def project_nodules(phantom: Phantom, geometry: Geometry) -> list[ProjectedNodule]:
    """Where each nodule of the phantom lies on the radiograph."""
    body = _depth_range(phantom)
    x0, z0 = geometry.central_ray_mm
    sx = -1.0 if geometry.mirrored else 1.0
    sp = geometry.spacing_mm
    out = []
    for n in phantom.nodules:
        if n.voxel_count == 0:
            continue
        x, y, z = phantom.index_to_patient(n.center_index)
        m = float(_magnification(_distance_to_detector(y, geometry, body), geometry))
        out.append(
            ProjectedNodule(
                row=(geometry.rows - 1) / 2.0 - m * (z - z0) / sp,
                column=(geometry.columns - 1) / 2.0 + sx * m * (x - x0) / sp,
                radius_px=max(n.semi_axes_mm) * m / sp,
                diameter_mm=n.diameter_mm,
                magnification=m,
            )
        )
    return out


def render(
    phantom: Phantom, geometry: Geometry, exposure: Exposure, noise_seed: int
) -> NDArray[np.uint16]:
    """Stored pixel values: primary + scatter, quantum noise, -log, tone curve, inversion
    for MONOCHROME1 (then air is white)."""
    lines = line_integrals(phantom, geometry)
    g_rows, g_cols, step = detector_grid(geometry)
    primary = np.exp(-lines)
    scatter = gaussian_filter(primary, sigma=40.0 / step, mode="nearest")
    signal = primary + np.float32(exposure.scatter_to_primary) * scatter
    # Resample the coarse grid to the image (both centred on the central ray).
    sp = geometry.spacing_mm
    r = (np.arange(geometry.rows) - (geometry.rows - 1) / 2.0) * sp / step + (g_rows - 1) / 2.0
    c = (np.arange(geometry.columns) - (geometry.columns - 1) / 2.0) * sp / step
    c += (g_cols - 1) / 2.0
    image = _interp_axis(_interp_axis(signal.astype(np.float32), r, 0), c, 1)
    if exposure.photons_per_mm2 is not None:
        rng = np.random.default_rng([noise_seed, 18])
        counts = np.float32(exposure.photons_per_mm2 * sp * sp)
        noise = rng.standard_normal(image.shape, dtype=np.float32)
        image += noise * np.sqrt(image / counts)
        np.maximum(image, 0.5 / counts, out=image)
    log_image = -np.log(np.maximum(image, np.float32(1e-6)))
    lo, hi = np.percentile(log_image[::4, ::4], [0.5, 99.5])
    tone = np.clip((log_image - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0) ** exposure.gamma
    top = (1 << exposure.bits_stored) - 1
    stored = np.rint(tone * top)
    if exposure.photometric_interpretation == "MONOCHROME1":
        stored = top - stored
    return stored.astype(np.uint16)


def make_radiograph(
    seed: int,
    *,
    view_position: ViewPosition | None = None,
    photometric: Photometric | None = None,
    long_side_px: int | None = None,
    mirrored: bool | None = None,
    n_nodules: int | None = None,
    nodule_diameter_mm: tuple[float, float] = NODULE_DIAMETER_MM,
    noise: bool = True,
    phantom: Phantom | None = None,
    projection: int = 0,
) -> Radiograph:
    """A chest radiograph of phantom ``seed``; None arguments are drawn from the seed.

    Pass ``phantom`` (from ``chest_phantom(seed, ...)``) and different ``projection``
    numbers to project one phantom several times with other geometries and exposures.
    """
    ph = phantom if phantom is not None else chest_phantom(seed, n_nodules, nodule_diameter_mm)
    rng = np.random.default_rng([seed, 17, projection])
    geometry = random_geometry(rng, ph, view_position, long_side_px, mirrored)
    exposure = random_exposure(rng, photometric, noise)
    body = _depth_range(ph)
    mid = _magnification(_distance_to_detector(0.5 * (body[0] + body[1]), geometry, body), geometry)
    return Radiograph(
        seed=seed,
        pixels=render(ph, geometry, exposure, seed * 1000 + projection),
        geometry=geometry,
        exposure=exposure,
        nodules=project_nodules(ph, geometry),
        magnification=float(mid),
    )
