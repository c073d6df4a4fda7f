"""Read what routing and indexing need from an encoded dataset, never the pixel data.

Also checks that the body agrees with the negotiated transfer syntax, so a file whose meta
header says one thing and whose body says another is never stored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from gateway.dicom.byte_readers import BufferReader, ByteReader, InflateError, InflatingReader
from gateway.dicom.dataset_limits import DatasetLimits
from gateway.dicom.raw_header import read_values
from gateway.dicom.structure import MalformedStructure, TopLevelElement, check_structure

_UID_SYNTAX = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_PIXEL_DATA_TAGS = (Tag(0x7FE00010), Tag(0x7FE00008), Tag(0x7FE00009))
# A pydicom Dataset or the values read from the bytes (raw_header.py): both have .get().
Values = Dataset | Mapping[str, Any]
_UNDEFINED_LENGTH = 0xFFFFFFFF
# Inflated bytes kept for the header parse; a bigger deflated body is walked as it inflates
# and only its attributes up to group 0020 (all we index) are read from these bytes.
HEADER_WINDOW_BYTES = 16 * 1024 * 1024
_LAST_HEADER_TAG = 0x0020FFFF


class UnreadableDataset(Exception):
    """The dataset cannot be understood; the message says what was expected and found."""


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    frame_of_reference_uid: str | None
    modality: str | None
    body_part_examined: str | None
    study_description: str | None
    series_description: str | None
    series_number: int | None
    instance_number: int | None
    slice_thickness: float | None
    study_date: str | None
    # Completeness of a series (technical, no PHI): see gateway/routing/completeness.py.
    slice_position: float | None = None  # ImagePositionPatient along the slice normal, mm
    images_in_acquisition: int | None = None  # (0020,1002), when the sender sets it
    acquisition_number: int | None = None
    # Patient identity, only for its keyed hash (gateway/patient_index.py): never in a repr,
    # a log line or a column.
    accession_number: str | None = field(default=None, repr=False)
    patient_id: str | None = field(default=None, repr=False)


def check_uid(name: str, value: object) -> str:
    """A UID that is safe to use as a file name: digits and dots, at most 64 characters."""
    text = str(value or "").strip().rstrip("\x00")
    if not text or len(text) > 64 or not _UID_SYNTAX.match(text):
        found = "none" if not text else f"{len(text)} characters that are not a UID"
        raise UnreadableDataset(
            f"{name}: expected a UID of digits and dots, at most 64 characters, found {found}"
        )
    return text


def _text(ds: Values, keyword: str, limit: int) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    return str(value)[:limit]


def _number(ds: Values, keyword: str, kind: type[int] | type[float]) -> int | float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None  # tolerate a malformed optional attribute when reading


def _slice_position(ds: Values) -> float | None:
    """ImagePositionPatient projected on the slice normal (row x column direction), or None
    when either attribute is missing or malformed (tolerated when reading)."""
    try:
        px, py, pz = (float(v) for v in ds.get("ImagePositionPatient") or ())
        rx, ry, rz, cx, cy, cz = (float(v) for v in ds.get("ImageOrientationPatient") or ())
    except (TypeError, ValueError):
        return None
    nx, ny, nz = ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx
    norm = (nx * nx + ny * ny + nz * nz) ** 0.5
    if norm < 1e-6:
        return None
    return (px * nx + py * ny + pz * nz) / norm


def _inflate(body: bytes | memoryview, limits: DatasetLimits) -> tuple[bytes, int]:
    """The inflated body (whole, or its first HEADER_WINDOW_BYTES) and its inflated size.

    Inflated as the structure walk reads it: refused past the bound (DatasetTooLarge), when
    the stream is cut off, or when the dataset inside is malformed.
    """
    reader = InflatingReader(
        body, max_bytes=limits.max_inflated_bytes, keep_bytes=HEADER_WINDOW_BYTES
    )
    try:
        _check_structure(reader, UID(DeflatedExplicitVRLittleEndian), limits)
        reader.drain()
    except InflateError as exc:
        raise UnreadableDataset(f"{DeflatedExplicitVRLittleEndian.name}: {exc}") from exc
    return bytes(reader.kept), reader.inflated


def _check_structure(
    reader: ByteReader,
    transfer_syntax: UID,
    limits: DatasetLimits,
    top_level: dict[int, TopLevelElement] | None = None,
) -> None:
    try:
        check_structure(
            reader,
            implicit_vr=transfer_syntax.is_implicit_VR,
            little_endian=transfer_syntax.is_little_endian,
            max_depth=limits.max_sequence_depth,
            top_level=top_level,
        )
    except MalformedStructure as exc:
        raise UnreadableDataset(str(exc)) from exc


def _check_body_matches_syntax(body: bytes | memoryview, transfer_syntax: UID) -> None:
    """The first element's encoding must agree with the negotiated transfer syntax."""
    if len(body) < 8:
        raise UnreadableDataset(f"expected a dataset of at least 8 bytes, found {len(body)}")
    vr = bytes(body[4:6])
    looks_explicit = vr.isalpha() and vr.isupper()
    if transfer_syntax.is_implicit_VR and looks_explicit:
        raise UnreadableDataset(
            f"expected implicit VR encoding for {transfer_syntax.name}, found explicit VR "
            f"{vr.decode('ascii')!r} in the first element"
        )
    if not transfer_syntax.is_implicit_VR and not looks_explicit:
        raise UnreadableDataset(
            f"expected explicit VR encoding for {transfer_syntax.name}, found no VR "
            "in the first element"
        )


def _check_complete(ds: Dataset, size: int) -> None:
    """Deferred values are skipped, not read: check that each one lies inside the bytes."""
    for raw in ds._dict.values():
        tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
        if tell is None or length is None or length == _UNDEFINED_LENGTH:
            continue
        if tell + length > size:
            raise UnreadableDataset(
                f"expected {length} value bytes for element {raw.tag}, found "
                f"{max(size - tell, 0)}: the dataset is truncated"
            )


def _check_pixel_encapsulation(lengths: list[int | None], transfer_syntax: UID) -> None:
    """`lengths`: value length of each pixel data element present (None: not known)."""
    for length in lengths:
        undefined = length == _UNDEFINED_LENGTH
        if transfer_syntax.is_encapsulated and not undefined:
            raise UnreadableDataset(
                f"expected encapsulated pixel data for {transfer_syntax.name}, found native"
            )
        if not transfer_syntax.is_encapsulated and undefined:
            raise UnreadableDataset(
                f"expected native pixel data for {transfer_syntax.name}, found encapsulated"
            )


def _header(ds: Values, transfer_syntax: UID) -> InstanceHeader:
    return InstanceHeader(
        sop_class_uid=check_uid("SOP Class UID", ds.get("SOPClassUID")),
        sop_instance_uid=check_uid("SOP Instance UID", ds.get("SOPInstanceUID")),
        study_instance_uid=check_uid("Study Instance UID", ds.get("StudyInstanceUID")),
        series_instance_uid=check_uid("Series Instance UID", ds.get("SeriesInstanceUID")),
        transfer_syntax_uid=str(transfer_syntax),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID", 64),
        modality=_text(ds, "Modality", 16),
        body_part_examined=_text(ds, "BodyPartExamined", 64),
        study_description=_text(ds, "StudyDescription", 64),
        series_description=_text(ds, "SeriesDescription", 64),
        series_number=_number(ds, "SeriesNumber", int),  # type: ignore[arg-type]
        instance_number=_number(ds, "InstanceNumber", int),  # type: ignore[arg-type]
        slice_thickness=_number(ds, "SliceThickness", float),
        study_date=_text(ds, "StudyDate", 8),
        slice_position=_slice_position(ds),
        images_in_acquisition=_number(ds, "ImagesInAcquisition", int),  # type: ignore[arg-type]
        acquisition_number=_number(ds, "AcquisitionNumber", int),  # type: ignore[arg-type]
        accession_number=_text(ds, "AccessionNumber", 64),
        patient_id=_text(ds, "PatientID", 64),
    )


def read_header(
    body: bytes | memoryview, transfer_syntax_uid: str, limits: DatasetLimits | None = None
) -> InstanceHeader:
    """Parse a dataset (no file meta) as received, without decoding pixel values.

    Raises UnreadableDataset (answer 0xC210) or DatasetTooLarge (answer 0xA700).
    """
    limits = limits or DatasetLimits()
    transfer_syntax = UID(transfer_syntax_uid)
    if len(body) < 8:  # before inflating: a short body is never a dataset
        raise UnreadableDataset(f"expected a dataset of at least 8 bytes, found {len(body)}")
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        body, size = _inflate(body, limits)
    else:
        size = len(body)
    _check_body_matches_syntax(body, transfer_syntax)
    top_level: dict[int, TopLevelElement] | None = None
    if transfer_syntax != DeflatedExplicitVRLittleEndian:
        top_level = {} if transfer_syntax.is_little_endian else None
        _check_structure(BufferReader(body), transfer_syntax, limits, top_level)
    if top_level is not None:  # located by the walk: read the values from the bytes
        values = read_values(body, top_level)
        if values is not None:
            if "SOPInstanceUID" not in values:
                raise UnreadableDataset("expected SOP Instance UID (0008,0018), found none")
            pixel: list[int | None] = [
                top_level[tag][2] for tag in _PIXEL_DATA_TAGS if tag in top_level
            ]
            _check_pixel_encapsulation(pixel, transfer_syntax)
            # The walk has checked that every value lies inside the bytes (_check_complete).
            return _header(values, transfer_syntax)
    whole = size == len(body)
    try:
        # defer_size: large values (pixel data) are skipped, never read or decoded. The
        # structure walk has bounded the nesting, so pydicom's recursion stays shallow.
        ds = read_dataset(
            BytesIO(body),
            transfer_syntax.is_implicit_VR,
            transfer_syntax.is_little_endian,
            defer_size=1024,
            stop_when=None if whole else (lambda tag, vr, length: tag > _LAST_HEADER_TAG),
        )
        if "SOPInstanceUID" not in ds:
            raise UnreadableDataset("expected SOP Instance UID (0008,0018), found none")
        pixel = [
            getattr(ds._dict[tag], "length", None)  # raw element: no value decoded
            for tag in _PIXEL_DATA_TAGS
            if tag in ds._dict
        ]
        _check_pixel_encapsulation(pixel, transfer_syntax)
        _check_complete(ds, size)
        header = _header(ds, transfer_syntax)
    except UnreadableDataset:
        raise
    except (
        InvalidDicomError,
        EOFError,
        ValueError,
        KeyError,
        TypeError,
        OSError,
        RecursionError,  # defensive: the structure walk bounds nesting before this
    ) as exc:
        raise UnreadableDataset(
            f"expected a DICOM dataset in {transfer_syntax.name}, found bytes that do not "
            f"parse ({type(exc).__name__})"
        ) from exc
    return header
