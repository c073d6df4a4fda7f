"""A STOW-RS part is a DICOM PS3.10 file: split it into its file meta (stored as received)
and the dataset, and read the three meta attributes the store needs."""

from __future__ import annotations

import struct
from dataclasses import dataclass

PREAMBLE = 128
PREFIX = b"DICM"
MAX_META_BYTES = 64 * 1024
# Explicit VR Little Endian: these VRs have 2 reserved bytes and a 4-byte length.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT"}
_TRANSFER_SYNTAX = 0x00020010
_SOP_CLASS = 0x00020002
_SOP_INSTANCE = 0x00020003


class NotPart10(Exception):
    """Not a PS3.10 file; the message says what was expected and found."""


@dataclass(frozen=True)
class Part10:
    meta: bytes
    """Preamble, DICM prefix and the file meta group, as received (a preamble is added when
    the part had none)."""
    dataset_offset: int
    transfer_syntax_uid: str
    media_storage_sop_class_uid: str | None
    media_storage_sop_instance_uid: str | None


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace").strip(" \x00")


def split_part10(data: bytes | memoryview) -> Part10:
    view = memoryview(data)
    if bytes(view[PREAMBLE : PREAMBLE + 4]) == PREFIX:
        start = PREAMBLE + 4
    elif bytes(view[:2]) == b"\x02\x00":  # tolerated: meta without preamble and prefix
        start = 0
    else:
        raise NotPart10(
            "expected a DICOM PS3.10 file (128-byte preamble, 'DICM', file meta), found neither "
            "the prefix nor a file meta group"
        )
    values: dict[int, bytes] = {}
    at = start
    while at + 8 <= len(view) and at - start < MAX_META_BYTES:
        group, element = struct.unpack_from("<HH", view, at)
        if group != 0x0002:
            break
        vr = bytes(view[at + 4 : at + 6])
        if vr in _LONG_VRS:
            if at + 12 > len(view):
                break
            (length,) = struct.unpack_from("<I", view, at + 8)
            value_at = at + 12
        else:
            (length,) = struct.unpack_from("<H", view, at + 6)
            value_at = at + 8
        if length == 0xFFFFFFFF or value_at + length > len(view):
            raise NotPart10(
                f"expected file meta element ({group:04X},{element:04X}) of {length} bytes, "
                "found the part shorter"
            )
        values[(group << 16) | element] = bytes(view[value_at : value_at + length])
        at = value_at + length
    if at - start >= MAX_META_BYTES:
        raise NotPart10(f"expected a file meta group under {MAX_META_BYTES} bytes, found more")
    transfer_syntax = _text(values.get(_TRANSFER_SYNTAX, b""))
    if not transfer_syntax:
        raise NotPart10("expected Transfer Syntax UID (0002,0010) in the file meta, found none")
    meta = bytes(view[:at]) if start else b"\x00" * PREAMBLE + PREFIX + bytes(view[:at])
    return Part10(
        meta=meta,
        dataset_offset=at,
        transfer_syntax_uid=transfer_syntax,
        media_storage_sop_class_uid=_text(values.get(_SOP_CLASS, b"")) or None,
        media_storage_sop_instance_uid=_text(values.get(_SOP_INSTANCE, b"")) or None,
    )
