"""What the gateway holds, as DICOMweb sees it: instances received (the database, files in
the spool) and produced (files in the results directory), and their stored headers."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian
from sqlalchemy import Engine, select

from gateway.dicomweb.dicom_json import PIXEL_DATA_TAGS
from gateway.dicomweb.produced import produced_files
from gateway.models import Instance, Series, Study

UNDEFINED_LENGTH = 0xFFFFFFFF


@dataclass(frozen=True)
class HeldInstance:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    path: Path
    produced: bool


@dataclass(frozen=True)
class PixelElement:
    """Where the pixel data element lies in the file, read without reading its value."""

    tag: int
    vr: str
    value_offset: int
    length: int  # UNDEFINED_LENGTH when encapsulated

    @property
    def encapsulated(self) -> bool:
        return self.length == UNDEFINED_LENGTH


@dataclass(frozen=True)
class StoredHeader:
    dataset: Dataset  # every element before the pixel data; large values deferred
    transfer_syntax_uid: str
    pixel: PixelElement | None


def read_stored_header(path: Path) -> StoredHeader:
    """The header of a stored file, never its pixel values."""
    with path.open("rb") as fp:
        ds = pydicom.dcmread(fp, stop_before_pixels=True, defer_size=4096)
        syntax = str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
        pixel = None
        if syntax != DeflatedExplicitVRLittleEndian:  # inflated in memory: no file offsets
            pixel = _pixel_element(fp, fp.tell(), implicit=syntax == "1.2.840.10008.1.2")
    if syntax == DeflatedExplicitVRLittleEndian:
        full = pydicom.dcmread(path)
        element = next((full[t] for t in sorted(PIXEL_DATA_TAGS) if t in full), None)
        if element is not None:
            pixel = PixelElement(int(element.tag), str(element.VR), -1, len(element.value))
    return StoredHeader(ds, syntax, pixel)


def _pixel_element(fp: BinaryIO, at: int, *, implicit: bool) -> PixelElement | None:
    head = fp.read(12)
    if len(head) < 8:
        return None
    group, element = struct.unpack_from("<HH", head)
    tag = (group << 16) | element
    if tag not in PIXEL_DATA_TAGS:
        return None
    if implicit:
        (length,) = struct.unpack_from("<I", head, 4)
        return PixelElement(tag, "OW", at + 8, length)
    vr = head[4:6].decode("ascii", "replace")
    if len(head) < 12:
        return None
    (length,) = struct.unpack_from("<I", head, 8)
    return PixelElement(tag, vr, at + 12, length)


class Holdings:
    def __init__(self, spool_dir: Path, results_dir: Path, engine: Engine) -> None:
        self.spool_dir = spool_dir
        self.results_dir = results_dir
        self.engine = engine

    def instances(
        self, study_uid: str, series_uid: str | None = None, sop_uid: str | None = None
    ) -> list[HeldInstance]:
        """Received then produced instances of a study (or one series, or one instance)."""
        statement = (
            select(
                Series.series_instance_uid,
                Instance.sop_instance_uid,
                Instance.sop_class_uid,
                Instance.file_path,
            )
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
            .where(Study.study_instance_uid == study_uid)
            .order_by(Series.id, Instance.instance_number, Instance.id)
        )
        if series_uid is not None:
            statement = statement.where(Series.series_instance_uid == series_uid)
        if sop_uid is not None:
            statement = statement.where(Instance.sop_instance_uid == sop_uid)
        with self.engine.connect() as connection:
            rows = connection.execute(statement).all()
        held = [
            HeldInstance(study_uid, series, sop, sop_class, self.spool_dir / path, False)
            for series, sop, sop_class, path in rows
        ]
        received = {instance.sop_instance_uid for instance in held}
        for produced in produced_files(self.results_dir, [study_uid]):
            # also received (results sent back to this gateway): the received copy is listed
            if produced.sop_instance_uid in received:
                continue
            if series_uid not in (None, produced.series_instance_uid):
                continue
            if sop_uid not in (None, produced.sop_instance_uid):
                continue
            held.append(
                HeldInstance(
                    study_uid,
                    produced.series_instance_uid,
                    produced.sop_instance_uid,
                    produced.sop_class_uid,
                    produced.path,
                    True,
                )
            )
        return held
