"""Frames and bulk data of a stored instance (WADO-RS .../frames/{n}, .../bulk/{tag}).

Native pixel data: a frame's bytes are read from the file at their offset, nothing else
(1-bit frames, which need not start on a byte, are repacked). Compressed pixel data: the
stored frame as it is when the client takes the stored transfer syntax ('*' or named),
otherwise decoded by pydicom (pylibjpeg, openjpeg, pyjpegls, RLE) and sent uncompressed
(Explicit VR Little Endian byte order; colour as pydicom decodes it, RGB). A frame that
cannot be decoded is answered 406 with the reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.encaps import generate_frames
from pydicom.tag import Tag

from gateway.dicomweb.accept import ANY_SYNTAX, EXPLICIT_VR_LITTLE_ENDIAN, Acceptable, NotAcceptable
from gateway.dicomweb.holdings import StoredHeader, read_stored_header

_LITTLE_ENDIAN_NATIVE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1"}


class NoSuchFrame(Exception):
    """A frame number outside 1..NumberOfFrames, or an instance without pixel data (404)."""


@dataclass(frozen=True)
class FramePart:
    content_type: str
    data: bytes


def parse_frame_list(text: str) -> list[int]:
    try:
        numbers = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise NoSuchFrame(f"expected frame numbers such as 1,2,3, found {text[:40]!r}") from None
    if not numbers or any(n < 1 for n in numbers):
        raise NoSuchFrame(f"expected frame numbers of 1 or more, found {text[:40]!r}")
    return numbers


def _geometry(header: StoredHeader) -> tuple[int, int, int, int, int]:
    ds = header.dataset
    frames = int(ds.get("NumberOfFrames") or 1)
    rows, columns = int(ds.Rows), int(ds.Columns)
    samples, bits = int(ds.get("SamplesPerPixel") or 1), int(ds.BitsAllocated)
    return frames, rows, columns, samples, bits


def _native_frame(path: Path, header: StoredHeader, index: int) -> bytes:
    assert header.pixel is not None
    _, rows, columns, samples, bits = _geometry(header)
    pixels = rows * columns * samples
    with path.open("rb") as fp:
        if bits == 1:  # frames are packed one after the other, bit by bit
            first_bit = index * pixels
            start, skip = divmod(first_bit, 8)
            fp.seek(header.pixel.value_offset + start)
            raw = np.frombuffer(fp.read((skip + pixels + 7) // 8), dtype=np.uint8)
            bits_of = np.unpackbits(raw, bitorder="little")[skip : skip + pixels]
            return np.packbits(bits_of, bitorder="little").tobytes()
        size = pixels * bits // 8
        fp.seek(header.pixel.value_offset + index * size)
        data = fp.read(size)
    if len(data) != size:
        raise NoSuchFrame(f"expected {size} bytes of frame {index + 1}, found {len(data)}")
    return data


def _decoded_frame(path: Path, index: int) -> bytes:
    ds = pydicom.dcmread(path)
    try:
        array = ds.pixel_array
    except Exception as exc:  # a codec missing or failing: say which syntax
        raise NotAcceptable(
            f"expected to decode {ds.file_meta.TransferSyntaxUID.name} for an uncompressed "
            f"frame, found {type(exc).__name__}; ask for transfer-syntax=* to get it as stored"
        ) from exc
    frames = int(ds.get("NumberOfFrames") or 1)
    frame = array[index] if frames > 1 else array
    little = frame.astype(frame.dtype.newbyteorder("<"), copy=False)
    return bytes(little.tobytes())


def _stored_frame(path: Path, index: int, frames: int) -> bytes:
    ds = pydicom.dcmread(path)
    for number, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
        if number == index:
            return frame
    raise NoSuchFrame(f"expected frame {index + 1} in the encapsulated pixel data, found fewer")


def frame_parts(path: Path, numbers: list[int], choices: list[Acceptable]) -> list[FramePart]:
    header = read_stored_header(path)
    if header.pixel is None or "Rows" not in header.dataset:
        raise NoSuchFrame("expected an instance with pixel data, found none")
    frames = _geometry(header)[0]
    if any(n > frames for n in numbers):
        raise NoSuchFrame(f"expected frame numbers up to {frames}, found {max(numbers)}")
    stored = header.transfer_syntax_uid
    as_stored = any(c.transfer_syntax in (ANY_SYNTAX, stored) for c in choices)
    raw = f"application/octet-stream; transfer-syntax={EXPLICIT_VR_LITTLE_ENDIAN}"
    parts = []
    for number in numbers:
        index = number - 1
        if stored in _LITTLE_ENDIAN_NATIVE and not header.pixel.encapsulated:
            parts.append(FramePart(raw, _native_frame(path, header, index)))
        elif header.pixel.encapsulated and as_stored:
            typed = f"application/octet-stream; transfer-syntax={stored}"
            parts.append(FramePart(typed, _stored_frame(path, index, frames)))
        else:  # compressed for a client that wants it uncompressed; deflated; big endian
            parts.append(FramePart(raw, _decoded_frame(path, index)))
    return parts


def bulk_parts(path: Path, tag_text: str, choices: list[Acceptable]) -> list[FramePart]:
    """A BulkDataURI's value: pixel data as its frames (all of them, in order), any other
    top-level element's value as one part."""
    try:
        tag = Tag(int(tag_text, 16))
    except ValueError:
        raise NoSuchFrame(f"expected a tag of 8 hex digits, found {tag_text[:20]!r}") from None
    header = read_stored_header(path)
    if header.pixel is not None and int(tag) == header.pixel.tag:
        if not header.pixel.encapsulated and header.transfer_syntax_uid in _LITTLE_ENDIAN_NATIVE:
            with path.open("rb") as fp:
                fp.seek(header.pixel.value_offset)
                data = fp.read(header.pixel.length)
            return [FramePart("application/octet-stream", data)]
        frames = _geometry(header)[0]
        return frame_parts(path, list(range(1, frames + 1)), choices)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if tag not in ds:
        raise NoSuchFrame(f"expected element {tag} in the instance, found none")
    value = ds[tag].value
    if not isinstance(value, bytes):
        raise NoSuchFrame(f"expected a binary value for element {tag}, found another")
    return [FramePart("application/octet-stream", value)]
