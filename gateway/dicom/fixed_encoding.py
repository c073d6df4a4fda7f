"""Byte-for-byte encodings of the two fixed structures every C-STORE costs us: the file
meta group written before each instance, and the C-STORE-RSP command set.

pynetdicom builds both as pydicom datasets (elements, tags, value validation, a writer
walking them): about a fifth of the listener's CPU per small instance (measured in
bench/results/ingest_profile.md). Their layout is fixed by PS3.10 7.1 and PS3.7 9.3.1.2,
so here they are packed directly; the tests compare them with pynetdicom's own encoding.
Anything unusual (an empty or over-long UID, an error comment on the response) returns
None and the caller takes pynetdicom's path.
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

_PREAMBLE = b"\x00" * 128 + b"DICM"
_MAX_UID = 64
_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101


def _uid_value(uid: str) -> bytes | None:
    """A UID padded to even length with NUL, or None if it is not a plain short UID."""
    if not uid or len(uid) > _MAX_UID or not uid.isascii():
        return None
    value = uid.encode("ascii")
    return value + b"\x00" if len(value) % 2 else value


def _explicit_short(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _version_name() -> bytes:
    value = PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    return value + b" " if len(value) % 2 else value


_META_TAIL = _explicit_short(
    0x0002, 0x0012, b"UI", _uid_value(str(PYNETDICOM_IMPLEMENTATION_UID)) or b""
) + _explicit_short(0x0002, 0x0013, b"SH", _version_name())
# (0002,0001) File Meta Information Version: OB, long form, value 00 01.
_META_VERSION = struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"


def file_header(
    sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str
) -> bytes | None:
    """Preamble, "DICM" and the file meta group pynetdicom's `Event.file_meta` describes
    (version 00 01, the three UIDs, pynetdicom's implementation UID and version name)."""
    sop_class = _uid_value(sop_class_uid)
    sop_instance = _uid_value(sop_instance_uid)
    syntax = _uid_value(transfer_syntax_uid)
    if sop_class is None or sop_instance is None or syntax is None:
        return None
    elements = (
        _META_VERSION
        + _explicit_short(0x0002, 0x0002, b"UI", sop_class)
        + _explicit_short(0x0002, 0x0003, b"UI", sop_instance)
        + _explicit_short(0x0002, 0x0010, b"UI", syntax)
        + _META_TAIL
    )
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(elements))
    return _PREAMBLE + group_length + elements


def _implicit(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, element, len(value)) + value


def c_store_response(
    sop_class_uid: str, message_id: int, status: int, sop_instance_uid: str
) -> bytes | None:
    """The C-STORE-RSP command set (Implicit VR Little Endian, PS3.7 9.3.1.2) without
    error comment or offending element, as pynetdicom encodes it."""
    sop_class = _uid_value(sop_class_uid)
    sop_instance = _uid_value(sop_instance_uid)
    if sop_class is None or sop_instance is None:
        return None
    elements = (
        _implicit(0x0000, 0x0002, sop_class)
        + _implicit(0x0000, 0x0100, struct.pack("<H", _C_STORE_RSP))
        + _implicit(0x0000, 0x0120, struct.pack("<H", message_id))
        + _implicit(0x0000, 0x0800, struct.pack("<H", _NO_DATA_SET))
        + _implicit(0x0000, 0x0900, struct.pack("<H", status))
        + _implicit(0x0000, 0x1000, sop_instance)
    )
    return _implicit(0x0000, 0x0000, struct.pack("<I", len(elements))) + elements
