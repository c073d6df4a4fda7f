"""Small CT-like studies with chosen routing attributes, stored through the real listener."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.uid import generate_uid

from tests.conftest import RunningGateway
from tests.dicom_samples import ct_instance, encode
from tests.scu import send_files

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]  # a localizer-like plane


def tilted(degrees: float) -> list[float]:
    """Axial slices tilted about the patient x axis (gantry tilt)."""
    angle = math.radians(degrees)
    return [1.0, 0.0, 0.0, 0.0, math.cos(angle), math.sin(angle)]


@dataclass
class SeriesSpec:
    number: int | None
    count: int
    modality: str | None = "CT"
    body_part: str | None = "CHEST"
    description: str | None = "AXIAL"
    thickness: float | None = 1.0
    orientation: list[float] | None = field(default_factory=lambda: list(AXIAL))


@dataclass
class SentStudy:
    study_uid: str
    series_uids: dict[int | None, str]  # by series number
    paths: dict[str, list[Path]]  # by series UID


def _set(ds: object, keyword: str, value: object) -> None:
    if value is None:
        if keyword in ds:  # type: ignore[operator]
            delattr(ds, keyword)
    else:
        setattr(ds, keyword, value)


def write_study(
    folder: Path, specs: list[SeriesSpec], study_description: str | None = "CT CHEST"
) -> SentStudy:
    study_uid = generate_uid()
    sent = SentStudy(study_uid, {}, {})
    for spec in specs:
        series_uid = generate_uid()
        sent.series_uids[spec.number] = series_uid
        paths = sent.paths.setdefault(series_uid, [])
        for index in range(spec.count):
            ds = ct_instance(study_uid, series_uid, index, rows=8, columns=8)
            for keyword, value in (
                ("SeriesNumber", spec.number),
                ("Modality", spec.modality),
                ("BodyPartExamined", spec.body_part),
                ("SeriesDescription", spec.description),
                ("StudyDescription", study_description),
                ("SliceThickness", spec.thickness),
                ("ImageOrientationPatient", spec.orientation),
            ):
                _set(ds, keyword, value)
            path = folder / study_uid / series_uid / f"{index:04d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode(ds))
            paths.append(path)
    return sent


def send_study(
    gateway: RunningGateway,
    folder: Path,
    specs: list[SeriesSpec],
    *,
    calling_ae: str = "CTSCANNER1",
    study_description: str | None = "CT CHEST",
) -> SentStudy:
    """Write the study and C-STORE it to the gateway; every instance must be stored."""
    sent = write_study(folder, specs, study_description)
    paths = [p for series in sent.paths.values() for p in series]
    statuses = send_files(gateway.port, paths, calling_ae=calling_ae)
    assert statuses == [0] * len(paths), f"expected every C-STORE to succeed, found {statuses}"
    return sent
