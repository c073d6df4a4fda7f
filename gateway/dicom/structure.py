"""A non-recursive walk over a dataset's elements, sequences and items, values skipped.

pydicom parses sequences recursively: a few thousand nested sequences end in RecursionError
(in the listener, and later in every worker that decodes the file). This walk keeps its own
stack, so it refuses nesting deeper than a bound before pydicom sees the bytes. It also
checks that every defined length lies inside its container and every undefined length is
closed by its delimiter, i.e. that the dataset is not truncated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR

from gateway.dicom.byte_readers import ByteReader

UNDEFINED_LENGTH = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_LITTLE = (struct.Struct("<HH"), struct.Struct("<H"), struct.Struct("<I"))
_BIG = (struct.Struct(">HH"), struct.Struct(">H"), struct.Struct(">I"))

_DATASET, _SEQUENCE, _FRAGMENTS = 0, 1, 2


class MalformedStructure(Exception):
    """Truncated, overrunning or too deeply nested; the message says what was found."""


@dataclass(slots=True)
class _Container:
    kind: int
    end: int | None  # None: undefined length (or the top level, which ends with the bytes)
    implicit_vr: bool
    little_endian: bool


def _implicit_vr_of(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None  # private or unknown


# A top-level element found by the walk: VR (None when implicit and not looked up), offset
# of its value in the bytes, value length.
TopLevelElement = tuple[str | None, int, int]


def check_structure(
    reader: ByteReader,
    *,
    implicit_vr: bool,
    little_endian: bool,
    max_depth: int,
    top_level: dict[int, TopLevelElement] | None = None,
) -> None:
    """Walk to the end of `reader`; raise MalformedStructure on the first problem.

    `top_level`, when given, receives every element of the top-level dataset by tag: the
    header can then be read from the bytes without a second parse."""
    stack = [_Container(_DATASET, None, implicit_vr, little_endian)]
    depth = 0  # sequences open
    read, skip = reader.read, reader.skip
    while True:
        here = stack[-1]
        position = reader.position
        if here.end is not None and position >= here.end:
            if position > here.end:
                raise MalformedStructure(
                    f"expected a container to end at byte {here.end}, found its content "
                    f"running to byte {position}"
                )
            stack.pop()
            depth -= here.kind != _DATASET
            continue
        head = read(8)
        if not head and len(stack) == 1:
            return
        if len(head) < 8:
            raise MalformedStructure(
                f"expected an 8-byte element header at byte {position}, found "
                f"{len(head)} bytes: the dataset is truncated"
            )
        tags, short, long = _LITTLE if here.little_endian else _BIG
        group, element = tags.unpack_from(head)
        tag = group << 16 | element
        if here.kind != _DATASET:  # a sequence or pixel fragments: items only
            (length,) = long.unpack_from(head, 4)
            if tag == _SEQUENCE_DELIMITER and here.end is None:
                stack.pop()
                depth -= 1
            elif tag != _ITEM:
                raise MalformedStructure(
                    f"expected an item or a sequence delimiter at byte {position}, found "
                    f"tag ({group:04X},{element:04X})"
                )
            elif here.kind == _SEQUENCE:
                end = None if length == UNDEFINED_LENGTH else reader.position + length
                stack.append(_Container(_DATASET, end, here.implicit_vr, here.little_endian))
            elif length == UNDEFINED_LENGTH:
                raise MalformedStructure(f"expected a defined fragment length at byte {position}")
            elif skip(length) < length:
                raise _truncated(length, position)
            continue
        if group == 0xFFFE:
            if tag == _ITEM_DELIMITER and here.end is None and len(stack) > 1:
                stack.pop()
                continue
            raise MalformedStructure(
                f"expected a data element at byte {position}, found delimiter "
                f"({group:04X},{element:04X})"
            )
        vr: str | None
        if here.implicit_vr:
            (length,) = long.unpack_from(head, 4)
            vr = _implicit_vr_of(tag) if length >= 8 else None
        else:
            vr_bytes = head[4:6]
            vr = vr_bytes.decode("latin-1")
            if vr_bytes in _LONG_VRS:
                extra = read(4)
                if len(extra) < 4:
                    raise MalformedStructure(
                        f"expected a 12-byte element header at byte {position}, found "
                        f"{8 + len(extra)} bytes: the dataset is truncated"
                    )
                (length,) = long.unpack(extra)
            else:
                (length,) = short.unpack_from(head, 6)
        if top_level is not None and len(stack) == 1:
            top_level[tag] = (vr, reader.position, length)
        if length == UNDEFINED_LENGTH:
            if vr in (None, "SQ", "UN"):
                # PS3.5 6.2.2: UN of undefined length holds items in Implicit VR Little Endian.
                implicit, little = (
                    (True, True) if vr == "UN" else (here.implicit_vr, here.little_endian)
                )
                stack.append(_Container(_SEQUENCE, None, implicit, little))
            else:  # encapsulated pixel data: a fragment sequence
                stack.append(_Container(_FRAGMENTS, None, here.implicit_vr, here.little_endian))
            depth += 1
        elif vr == "SQ" and length:
            stack.append(
                _Container(
                    _SEQUENCE, reader.position + length, here.implicit_vr, here.little_endian
                )
            )
            depth += 1
        elif skip(length) < length:
            raise _truncated(length, position)
        if depth > max_depth:
            raise MalformedStructure(
                f"expected sequences nested at most {max_depth} deep, found deeper "
                f"nesting at byte {position}"
            )


def _truncated(length: int, position: int) -> MalformedStructure:
    return MalformedStructure(
        f"expected {length} value bytes after the element at byte {position}, found fewer: "
        "the dataset is truncated"
    )
