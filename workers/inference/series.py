"""Read a CT series from files into a volume in patient geometry: each file read once (its
header, and its pixels unless the prefetch cache holds them, workers/prefetch/)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from workers.inference.errors import SeriesError

# Relative tolerance of slice spacing before a gap counts as missing/uneven slices.
SPACING_TOLERANCE = 0.1


@dataclass(frozen=True)
class Volume:
    """A series as a volume: slices sorted by position along the slice normal (ascending)."""

    hu: NDArray[np.float32]
    """(slices, rows, columns) in HU."""
    pixel_spacing: tuple[float, float]
    """(row spacing, column spacing) in mm, as DICOM PixelSpacing."""
    slice_spacing: float
    """Distance between consecutive slice centres along the normal (mm)."""
    positions: NDArray[np.float64]
    """(slices, 3) ImagePositionPatient of each sorted slice."""
    row_direction: NDArray[np.float64]
    """Direction of increasing column index (first triple of ImageOrientationPatient)."""
    column_direction: NDArray[np.float64]
    """Direction of increasing row index (second triple)."""
    normal: NDArray[np.float64]
    sop_instance_uids: tuple[str, ...]
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    grids: Mapping[str, tuple[NDArray[np.float32] | None, ...]] = field(default_factory=dict)
    """Model-grid slices made while the series arrived, by grid key (workers/prefetch/grids.py),
    in the volume's slice order; None where a slice has none."""

    @property
    def shape(self) -> tuple[int, int, int]:
        s = self.hu.shape
        return (int(s[0]), int(s[1]), int(s[2]))

    @property
    def voxel_volume_mm3(self) -> float:
        return self.pixel_spacing[0] * self.pixel_spacing[1] * self.slice_spacing

    def index_to_patient(self, index: NDArray[np.float64]) -> NDArray[np.float64]:
        """(N, 3) (slice, row, column) float indices -> (N, 3) patient positions (mm)."""
        idx = np.atleast_2d(np.asarray(index, dtype=np.float64))
        origin = self.positions[0]
        return (
            origin
            + idx[:, 0:1] * self.slice_spacing * self.normal
            + idx[:, 1:2] * self.pixel_spacing[0] * self.column_direction
            + idx[:, 2:3] * self.pixel_spacing[1] * self.row_direction
        )


def _floats(ds: Dataset, keyword: str, count: int, where: str) -> NDArray[np.float64]:
    value = ds.get(keyword)
    if value is None:
        raise SeriesError(f"{where}: expected {keyword} ({count} values), found none")
    arr = np.asarray([float(v) for v in value], dtype=np.float64)
    if arr.shape != (count,):
        raise SeriesError(f"{where}: expected {count} values in {keyword}, found {arr.size}")
    return arr


@dataclass(frozen=True)
class SeriesFile:
    """One instance of a series as the index knows it: its file, and its SOP Instance UID
    (empty when unknown: files given directly), which a prefetched slice must match."""

    path: Path
    sop_instance_uid: str = ""


@dataclass(frozen=True)
class PrefetchedSlice:
    """A slice decoded while the series arrived (workers/prefetch/cache.py)."""

    stored: NDArray[Any]
    """The stored pixel values, as pydicom decodes them (before rescale)."""
    rescale: tuple[float, float]
    """(slope, intercept) the grids were made with."""
    pixel_spacing: tuple[float, float]
    """PixelSpacing the grids were made with."""
    grids: Mapping[str, NDArray[np.float32]]
    """Grid key -> (size, size) model-grid slice."""


class PrefetchedSlices(Protocol):
    def lookup(self, file: SeriesFile) -> PrefetchedSlice | None:
        """The slice decoded from this very file (same SOP Instance UID, path, size and
        modification time), or None."""
        ...


@dataclass(frozen=True)
class LoadedSeries:
    volume: Volume
    headers: tuple[Dataset, ...]
    """The files' datasets without pixel data, in the order of the files given."""
    prefetched: int
    """Slices whose pixels came from the prefetch cache."""


def read_series(paths: Iterable[Path | str]) -> Volume:
    """Read CT/MR single-frame files of one series into a sorted volume.

    Any transfer syntax that pydicom can decode (with pylibjpeg: JPEG, JPEG-LS, JPEG 2000,
    RLE; deflate). Raises SeriesError naming what was expected and what was found.
    """
    return load_series([SeriesFile(Path(p)) for p in paths]).volume


def load_series(
    files: Sequence[SeriesFile], prefetched: PrefetchedSlices | None = None
) -> LoadedSeries:
    """The series' volume and headers, each file read once: a slice the cache holds for this
    very file is read up to its pixel data only; any other is read whole and decoded."""
    named: list[tuple[str, Dataset]] = []
    stored: list[NDArray[Any]] = []
    cached: list[PrefetchedSlice | None] = []
    for file in files:
        name = file.path.name
        entry = prefetched.lookup(file) if prefetched is not None else None
        if entry is not None:
            ds = _dcmread(file.path, name, stop_before_pixels=True)
            if not _matches(entry, ds, file):
                entry = None  # another instance or size than the cache saw: decode it here
        if entry is None:
            ds = _dcmread(file.path, name, stop_before_pixels=False)
            if "PixelData" not in ds:
                raise SeriesError(f"{name}: expected an image with Pixel Data, found none")
            pixels = decode_pixels(ds, name)
            del ds.PixelData  # the header stays; the results need no pixels
        else:
            pixels = entry.stored
        named.append((name, ds))
        stored.append(pixels)
        cached.append(entry)
    volume = volume_from_datasets(named, stored, cached)
    return LoadedSeries(volume, tuple(ds for _, ds in named), sum(e is not None for e in cached))


def _dcmread(path: Path, name: str, *, stop_before_pixels: bool) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except Exception as exc:
        raise SeriesError(f"{name}: expected a DICOM file, found unreadable data ({exc})") from exc


def _matches(entry: PrefetchedSlice, ds: Dataset, file: SeriesFile) -> bool:
    shape = (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0))
    return str(ds.get("SOPInstanceUID", "")) == file.sop_instance_uid and (
        entry.stored.shape == shape
    )


def decode_pixels(ds: Dataset, name: str) -> NDArray[Any]:
    """The stored pixel values of a single-frame image (any transfer syntax pydicom decodes)."""
    try:
        return ds.pixel_array
    except Exception as exc:
        ts = getattr(ds.file_meta, "TransferSyntaxUID", "unknown")
        raise SeriesError(
            f"{name}: expected decodable pixel data, found transfer syntax {ts} "
            f"that could not be decoded ({exc})"
        ) from exc


def rescale_of(ds: Dataset) -> tuple[float, float]:
    """(RescaleSlope, RescaleIntercept), 1 and 0 when absent."""
    return float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)


def to_hu(
    stored: NDArray[Any], rescale: tuple[float, float], out: NDArray[np.float32] | None = None
) -> NDArray[np.float32]:
    """Stored values to rescaled values (HU for CT) in float32, into `out` if given; the
    prefetcher's grids are made from the same arithmetic (float32 products and sums), so a
    cached slice equals a decoded one bit for bit."""
    slope, intercept = np.float32(rescale[0]), np.float32(rescale[1])
    hu = np.multiply(stored, slope, out=out, dtype=np.float32)
    hu += intercept
    return hu


def volume_from_datasets(
    named: Sequence[tuple[str, Dataset]],
    stored: Sequence[NDArray[Any] | None] | None = None,
    prefetched: Sequence[PrefetchedSlice | None] | None = None,
) -> Volume:
    """The sorted volume of the datasets; `stored[i]`: the decoded pixels of `named[i]` (None:
    decode its Pixel Data here); `prefetched[i]`: its cached slice, whose grids are kept where
    they were made with this slice's rescale and pixel spacing."""
    if not named:
        raise SeriesError("expected at least one image in the series, found none")
    first_name, first = named[0]
    series_uid = str(first.get("SeriesInstanceUID", ""))
    iop = _floats(first, "ImageOrientationPatient", 6, first_name)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    norm = float(np.linalg.norm(normal))
    if norm < 0.5:
        raise SeriesError(f"{first_name}: expected orthogonal ImageOrientationPatient, found {iop}")
    normal /= norm
    spacing = _floats(first, "PixelSpacing", 2, first_name)
    rows, cols = int(first.Rows), int(first.Columns)
    items: list[tuple[float, str, Dataset, NDArray[np.float64], int]] = []
    for index, (name, ds) in enumerate(named):
        if str(ds.get("SeriesInstanceUID", "")) != series_uid:
            raise SeriesError(
                f"{name}: expected SeriesInstanceUID of the first image, found another series"
            )
        if int(getattr(ds, "NumberOfFrames", 1) or 1) != 1:
            raise SeriesError(f"{name}: expected single-frame images, found a multi-frame one")
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise SeriesError(
                f"{name}: expected {rows}x{cols} pixels, found {ds.Rows}x{ds.Columns}"
            )
        o = _floats(ds, "ImageOrientationPatient", 6, name)
        if not np.allclose(o, iop, atol=1e-3):
            raise SeriesError(f"{name}: expected ImageOrientationPatient {iop}, found {o}")
        s = _floats(ds, "PixelSpacing", 2, name)
        if not np.allclose(s, spacing, rtol=1e-3):
            raise SeriesError(f"{name}: expected PixelSpacing {spacing}, found {s}")
        pos = _floats(ds, "ImagePositionPatient", 3, name)
        items.append((float(pos @ normal), name, ds, pos, index))
    items.sort(key=lambda it: it[0])
    dist = np.array([it[0] for it in items])
    slice_spacing = _check_spacing(dist, items, first)

    pixel_spacing = (float(spacing[0]), float(spacing[1]))
    hu = np.empty((len(items), rows, cols), dtype=np.float32)
    grids: dict[str, list[NDArray[np.float32] | None]] = {}
    for k, (_, name, ds, _, index) in enumerate(items):
        pixels = stored[index] if stored is not None else None
        rescale = rescale_of(ds)
        to_hu(decode_pixels(ds, name) if pixels is None else pixels, rescale, out=hu[k])
        entry = prefetched[index] if prefetched is not None else None
        # grids made with another rescale or spacing than the volume's are made again
        if entry is None or (entry.rescale, entry.pixel_spacing) != (rescale, pixel_spacing):
            continue
        for key, grid in entry.grids.items():
            grids.setdefault(key, [None] * len(items))[k] = grid
    return Volume(
        hu=hu,
        pixel_spacing=pixel_spacing,
        slice_spacing=slice_spacing,
        positions=np.stack([it[3] for it in items]),
        row_direction=row_dir,
        column_direction=col_dir,
        normal=normal,
        sop_instance_uids=tuple(str(it[2].SOPInstanceUID) for it in items),
        study_instance_uid=str(first.get("StudyInstanceUID", "")),
        series_instance_uid=series_uid,
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
        grids={key: tuple(slices) for key, slices in grids.items()},
    )


def _check_spacing(
    dist: NDArray[np.float64],
    items: Sequence[tuple[float, str, Dataset, NDArray[np.float64], int]],
    first: Dataset,
) -> float:
    if len(dist) == 1:
        thickness = first.get("SliceThickness")
        return float(thickness) if thickness else 1.0
    gaps = np.diff(dist)
    dup = np.flatnonzero(gaps < 1e-3)
    if dup.size:
        a, b = items[dup[0]][1], items[dup[0] + 1][1]
        raise SeriesError(
            f"expected one image per slice position, found {a} and {b} at the same position "
            f"{dist[dup[0]]:.3f} mm along the slice normal"
        )
    expected = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - expected) > SPACING_TOLERANCE * expected)
    if bad.size:
        i = int(bad[0])
        found = float(gaps[i])
        missing = round(found / expected) - 1
        what = f"{missing} missing slice(s)" if missing >= 1 else "uneven slice spacing"
        raise SeriesError(
            f"{what}: expected slices every {expected:.3f} mm along the normal, found a gap of "
            f"{found:.3f} mm between {items[i][1]} and {items[i + 1][1]} "
            f"({len(bad)} irregular gap(s) in {len(dist)} slices)"
        )
    return float((dist[-1] - dist[0]) / (len(dist) - 1))
