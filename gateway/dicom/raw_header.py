"""The attributes ingest indexes, read straight from the element bytes the structure walk
located (gateway/dicom/structure.py), without building a pydicom dataset.

pydicom converted and validated every value it read (about half of a small instance's
header time). Here UIDs, code strings, dates and numbers are decoded as pydicom decodes
them (default repertoire, trailing padding stripped). Anything unusual (a multi-valued
text, an unexpected VR, a character set other than the default, Latin-1 or UTF-8, text that
does not decode) returns None, and the caller reads the dataset with pydicom as before, so
the result for those is pydicom's.
"""

from __future__ import annotations

import math
from typing import Any

from gateway.dicom.structure import TopLevelElement

_SPECIFIC_CHARACTER_SET = 0x00080005
# Character sets whose texts decode without pydicom's escape-sequence handling.
_TEXT_CODECS = {
    "": "latin-1",
    "ISO_IR 6": "latin-1",
    "ISO_IR 100": "latin-1",
    "ISO_IR 192": "utf-8",
}

# keyword: (tag, VR)
_FIELDS = {
    "SOPClassUID": (0x00080016, "UI"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "StudyDate": (0x00080020, "DA"),
    "AccessionNumber": (0x00080050, "SH"),
    "Modality": (0x00080060, "CS"),
    "StudyDescription": (0x00081030, "LO"),
    "SeriesDescription": (0x0008103E, "LO"),
    "PatientID": (0x00100020, "LO"),
    "BodyPartExamined": (0x00180015, "CS"),
    "SliceThickness": (0x00180050, "DS"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "SeriesInstanceUID": (0x0020000E, "UI"),
    "SeriesNumber": (0x00200011, "IS"),
    "AcquisitionNumber": (0x00200012, "IS"),
    "InstanceNumber": (0x00200013, "IS"),
    "ImagePositionPatient": (0x00200032, "DS"),
    "ImageOrientationPatient": (0x00200037, "DS"),
    "FrameOfReferenceUID": (0x00200052, "UI"),
    "ImagesInAcquisition": (0x00201002, "IS"),
}
_CHARACTER_SET_VRS = frozenset({"SH", "LO"})
_MULTI_VALUED = frozenset({"ImagePositionPatient", "ImageOrientationPatient"})


class _Unusual(Exception):
    """Leave this dataset to pydicom."""


def read_values(
    body: bytes | memoryview, top_level: dict[int, TopLevelElement]
) -> dict[str, Any] | None:
    """keyword -> value as pydicom would give it: a str (padding stripped, "" when empty),
    or a list of str for the multi-valued positions; absent keywords are left out. None
    when the dataset needs pydicom (see the module's docstring)."""
    try:
        charset = _text(body, top_level.get(_SPECIFIC_CHARACTER_SET), "CS", "latin-1")
        codec = _TEXT_CODECS.get(charset or "")
        if codec is None:
            return None
        values: dict[str, Any] = {}
        for keyword, (tag, vr) in _FIELDS.items():
            element = top_level.get(tag)
            if element is None:
                continue
            text = _text(body, element, vr, codec if vr in _CHARACTER_SET_VRS else "latin-1")
            if keyword in _MULTI_VALUED:
                values[keyword] = text.split("\\") if text else []
            elif "\\" in text:
                raise _Unusual  # pydicom makes a MultiValue of it
            elif vr == "IS" and text:
                values[keyword] = _integer_string(text)
            else:
                values[keyword] = text
    except (_Unusual, UnicodeDecodeError):
        return None
    return values


def _text(body: bytes | memoryview, element: TopLevelElement | None, vr: str, codec: str) -> str:
    if element is None:
        return ""
    found_vr, offset, length = element
    if found_vr not in (None, vr, "UN") or length == 0xFFFFFFFF:
        raise _Unusual
    raw = bytes(body[offset : offset + length])
    text = raw.decode(codec).rstrip(" \x00")
    return text.strip() if vr in ("DS", "IS") else text


def _integer_string(text: str) -> int | None:
    """As pydicom's IS read by int(): an integer, or a decimal truncated ("2.5" -> 2, as
    int(ISfloat) gives); None when not a number or outside IS's 32-bit range."""
    try:
        number = int(text)
    except ValueError:
        try:
            real = float(text)
        except ValueError:
            return None
        if not math.isfinite(real):
            return None
        number = int(real)
    return number if -(2**31) <= number < 2**31 else None
