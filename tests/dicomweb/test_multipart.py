"""The streaming multipart/related reader: parts come out whole whatever the read sizes (a
boundary split across reads, one byte at a time), a preamble and an epilogue are skipped,
and a body cut short or without boundaries is refused; media type parameters are read as
DICOMweb clients write them (quoted or not)."""

from __future__ import annotations

import io

import pytest

from gateway.dicomweb.accept import multipart_choices
from gateway.dicomweb.multipart import MediaType, MultipartError, MultipartReader

PARTS = [b"first part \r\n--not-the-boundary", b"", b"\r\n--bound", bytes(range(256)) * 40]


def _body(parts: list[bytes], boundary: str = "bound-ary") -> bytes:
    out = b"preamble to ignore\r\n"
    for index, part in enumerate(parts):
        headers = "" if index == 1 else "Content-Type: application/dicom\r\n"
        out += f"--{boundary}\r\n{headers}\r\n".encode() + part + b"\r\n"
    return out + f"--{boundary}--\r\nepilogue".encode()


def _read(body: bytes, read_size: int, chunk_bytes: int) -> list[tuple[dict[str, str], bytes]]:
    stream = io.BytesIO(body)
    reader = MultipartReader(lambda n: stream.read(min(n, read_size)), b"bound-ary", chunk_bytes)
    return [(part.headers, b"".join(part.chunks)) for part in reader.parts()]


@pytest.mark.parametrize(("read_size", "chunk_bytes"), [(1, 1), (3, 7), (64, 64), (10**6, 10**6)])
def test_parts_come_out_whole_whatever_the_read_sizes(read_size: int, chunk_bytes: int) -> None:
    parts = _read(_body(PARTS), read_size, chunk_bytes)
    assert [content for _, content in parts] == PARTS
    assert parts[0][0] == {"content-type": "application/dicom"} and parts[1][0] == {}


def test_memory_holds_a_chunk_not_a_part() -> None:
    big = b"\x00" * (4 * 1024 * 1024)
    stream = io.BytesIO(_body([big]))
    reader = MultipartReader(stream.read, b"bound-ary", 64 * 1024)
    for part in reader.parts():
        sizes = [len(chunk) for chunk in part.chunks]
        assert sum(sizes) == len(big) and max(sizes) <= 64 * 1024


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"no boundary here at all", "boundary"),
        (b"--bound-ary\r\nContent-Type: application/dicom\r\n\r\ncut short", "end of the body"),
        (b"--bound-ary\r\nbroken header line\r\n\r\nx\r\n--bound-ary--", "Name: value"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=message):
        _read(body, 1024, 1024)


def test_media_types_quoted_or_not() -> None:
    unquoted = MediaType.parse(
        "multipart/related; type=application/octet-stream; transfer-syntax=*"
    )
    assert unquoted.parameters == {"type": "application/octet-stream", "transfer-syntax": "*"}
    quoted = MediaType.parse('Multipart/Related; Type="application/dicom"; boundary="a;b"')
    assert quoted.type == "multipart/related" and quoted.parameters["boundary"] == "a;b"
    choices = multipart_choices(
        'multipart/related; type="image/jpeg", multipart/related; type=application/octet-stream;'
        " transfer-syntax=1.2.840.10008.1.2.4.50",
        ("application/octet-stream",),
    )
    assert [(c.part_type, c.transfer_syntax) for c in choices] == [
        ("application/octet-stream", "1.2.840.10008.1.2.4.50")
    ]
