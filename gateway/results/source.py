"""The source series of a result: headers in the order of the findings, checked for what a
SEG needs (a frame of reference and one slice per position)."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pydicom
from pydicom.dataset import Dataset

# Two slices closer than this along the normal share a position (mm).
_SAME_POSITION_MM = 1e-3


class UnsupportedReason(enum.StrEnum):
    NO_IMAGES = "no_images"
    MIXED_SERIES = "mixed_series"
    NO_FRAME_OF_REFERENCE = "no_frame_of_reference"
    NO_PATIENT_GEOMETRY = "no_patient_geometry"
    MULTI_FRAME = "multi_frame"
    MIXED_GEOMETRY = "mixed_geometry"
    DUPLICATE_SLICE_POSITIONS = "duplicate_slice_positions"
    FINDINGS_MISMATCH = "findings_mismatch"


class UnsupportedSeries(Exception):
    """No result can be written for this series; `reason` says why, in a stable code."""

    def __init__(self, reason: UnsupportedReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class SourceSeries:
    """Headers (no pixel data) of the source images, in slice order of the findings."""

    datasets: tuple[Dataset, ...]

    @property
    def first(self) -> Dataset:
        return self.datasets[0]


def read_source_series(paths: Iterable[Path | str]) -> list[Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


def order_source_series(
    datasets: Sequence[Dataset],
    sop_instance_uids: Sequence[str],
    geometry: Literal["volume", "image"] = "volume",
) -> SourceSeries:
    """Check the series and put it in the order of `sop_instance_uids` (the label slices).
    A projection image ('image') needs no patient geometry: its SR points at its pixels."""
    if geometry == "image":
        check_source_images(datasets)
    else:
        check_source_series(datasets)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in datasets}
    missing = [uid for uid in sop_instance_uids if uid not in by_uid]
    if missing or len(sop_instance_uids) != len(by_uid):
        raise UnsupportedSeries(
            UnsupportedReason.FINDINGS_MISMATCH,
            f"expected the {len(by_uid)} source images to match the {len(sop_instance_uids)} "
            f"label slices, found {len(missing)} slice(s) without a source image",
        )
    return SourceSeries(tuple(by_uid[uid] for uid in sop_instance_uids))


def check_source_images(datasets: Sequence[Dataset]) -> None:
    """Raise UnsupportedSeries unless the images are single-frame images of one series."""
    if not datasets:
        raise UnsupportedSeries(UnsupportedReason.NO_IMAGES, "expected images, found none")
    _check_one_series(datasets)
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise UnsupportedSeries(
            UnsupportedReason.MULTI_FRAME, "expected single-frame images, found multi-frame"
        )


def _check_one_series(datasets: Sequence[Dataset]) -> None:
    for key in ("StudyInstanceUID", "SeriesInstanceUID"):
        values = {str(ds.get(key, "")) for ds in datasets}
        if len(values) != 1:
            raise UnsupportedSeries(
                UnsupportedReason.MIXED_SERIES, f"expected one {key}, found {len(values)}"
            )


def check_source_series(datasets: Sequence[Dataset]) -> None:
    """Raise UnsupportedSeries unless the images form one cross-sectional series with a
    frame of reference, one orientation and size, and distinct slice positions."""
    if not datasets:
        raise UnsupportedSeries(UnsupportedReason.NO_IMAGES, "expected images, found none")
    first = datasets[0]
    _check_one_series(datasets)
    if not all(ds.get("FrameOfReferenceUID") for ds in datasets):
        raise UnsupportedSeries(
            UnsupportedReason.NO_FRAME_OF_REFERENCE,
            f"expected FrameOfReferenceUID on every image, found none on some "
            f"(modality {first.get('Modality', '?')}: a projection image?)",
        )
    for key in ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing"):
        if not all(key in ds for ds in datasets):
            raise UnsupportedSeries(
                UnsupportedReason.NO_PATIENT_GEOMETRY,
                f"expected {key} on every image, found it missing",
            )
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise UnsupportedSeries(
            UnsupportedReason.MULTI_FRAME, "expected single-frame images, found multi-frame"
        )
    orientation = np.asarray(first.ImageOrientationPatient, dtype=float)
    size = (int(first.Rows), int(first.Columns))
    for ds in datasets[1:]:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, float), orientation, atol=1e-4):
            raise UnsupportedSeries(
                UnsupportedReason.MIXED_GEOMETRY,
                f"expected ImageOrientationPatient {list(orientation)} on every image, "
                f"found {list(ds.ImageOrientationPatient)}",
            )
        if (int(ds.Rows), int(ds.Columns)) != size:
            raise UnsupportedSeries(
                UnsupportedReason.MIXED_GEOMETRY,
                f"expected {size[0]}x{size[1]} images, found {ds.Rows}x{ds.Columns}",
            )
    normal = np.cross(orientation[:3], orientation[3:])
    offsets = np.sort([float(np.dot(normal, ds.ImagePositionPatient)) for ds in datasets])
    if len(offsets) > 1 and float(np.min(np.diff(offsets))) < _SAME_POSITION_MM:
        raise UnsupportedSeries(
            UnsupportedReason.DUPLICATE_SLICE_POSITIONS,
            f"expected {len(offsets)} distinct slice positions, "
            f"found {len(np.unique(np.round(offsets / _SAME_POSITION_MM)))}",
        )
