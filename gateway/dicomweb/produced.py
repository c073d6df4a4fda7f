"""What the gateway produced (SEG, SR, ...): files under results_dir/<study>/<series>/, as
gateway/results/build.py writes them. The directory is the index: no table lists every
result (deliveries name only what a destination takes), and a result file is written, and
fsynced, before any row about it. A rerun that wrote the same SOP Instance UID again left a
second file (`<sop>.<suffix>.dcm`, see gateway/dicom/spool.py): the newest one counts, and
the UIDs come from each file's meta, never from its name."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from gateway.dicom.header import UnreadableDataset, check_uid


@dataclass(frozen=True)
class ProducedFile:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    path: Path


def _is_uid(name: str) -> bool:
    try:
        check_uid("UID", name)
    except UnreadableDataset:
        return False
    return True


def produced_studies(results_dir: Path) -> list[str]:
    """Study Instance UIDs that have produced objects."""
    try:
        names = os.listdir(results_dir)
    except FileNotFoundError:
        return []
    return sorted(name for name in names if _is_uid(name) and (results_dir / name).is_dir())


def produced_files(
    results_dir: Path, study_instance_uids: Iterable[str] | None = None
) -> list[ProducedFile]:
    """The produced objects of these studies (all when None), one per SOP Instance UID,
    ordered by study, series and SOP Instance UID."""
    studies = produced_studies(results_dir) if study_instance_uids is None else study_instance_uids
    found: list[ProducedFile] = []
    for study in studies:
        if not _is_uid(study):
            continue
        study_dir = results_dir / study
        try:
            series_names = sorted(os.listdir(study_dir))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for series in series_names:
            if not _is_uid(series):
                continue
            found.extend(_series_files(study, series, study_dir / series))
    return found


def _series_files(study: str, series: str, directory: Path) -> list[ProducedFile]:
    newest: dict[str, tuple[float, ProducedFile]] = {}
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        # temporary files of a write in progress start with a dot
        if entry.name.startswith(".") or not entry.name.endswith(".dcm") or not entry.is_file():
            continue
        identity = _identity(Path(entry.path))
        if identity is None:
            continue
        sop, sop_class = identity
        mtime = entry.stat().st_mtime
        if sop not in newest or mtime > newest[sop][0]:
            newest[sop] = (mtime, ProducedFile(study, series, sop, sop_class, Path(entry.path)))
    return [newest[sop][1] for sop in sorted(newest)]


def _identity(path: Path) -> tuple[str, str] | None:
    """SOP Instance and SOP Class UID from the file meta (a file name can be ambiguous)."""
    try:
        meta = pydicom.filereader.read_file_meta_info(path)
        return (
            check_uid("SOP Instance UID", meta.get("MediaStorageSOPInstanceUID")),
            check_uid("SOP Class UID", meta.get("MediaStorageSOPClassUID")),
        )
    except (OSError, InvalidDicomError, UnreadableDataset, ValueError, EOFError):
        return None
