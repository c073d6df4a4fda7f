"""Read a multipart/related body part by part as it arrives: one part in memory at a time
(bounded), never the whole body."""

from __future__ import annotations

import time
from collections.abc import Iterator
from email.message import Message
from typing import Protocol

_CHUNK = 256 * 1024
_MAX_HEADERS = 16 * 1024
_MAX_PREAMBLE = 64 * 1024


class MultipartError(Exception):
    """The body is not the multipart/related it claims to be, or breaks off."""


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def boundary_of(content_type: str) -> str:
    """The boundary parameter of a multipart Content-Type header."""
    message = Message()
    message["Content-Type"] = content_type
    if message.get_content_maintype() != "multipart":
        raise MultipartError(f"expected a multipart Content-Type, found {content_type[:100]!r}")
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        raise MultipartError("expected a boundary in the multipart Content-Type, found none")
    return boundary


class _Buffer:
    def __init__(self, stream: Readable, deadline: float | None) -> None:
        self.stream = stream
        self.deadline = deadline
        # A CRLF before the first delimiter lets one separator pattern find every part.
        self.data = bytearray(b"\r\n")
        self.eof = False

    def fill(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise TimeoutError("the retrieval took longer than its deadline")
        chunk = self.stream.read(_CHUNK)
        if not chunk:
            self.eof = True
        else:
            self.data += chunk

    def find(self, pattern: bytes, limit: int, what: str) -> int:
        """Index of `pattern`, reading more as needed; at most `limit` bytes before it."""
        start = 0
        while True:
            index = self.data.find(pattern, start)
            if index >= 0:
                return index
            if len(self.data) > limit:
                raise MultipartError(f"expected {what} within {limit} bytes, found none")
            if self.eof:
                raise MultipartError(f"expected {what}, found the end of the body")
            start = max(0, len(self.data) - len(pattern) + 1)
            self.fill()

    def need(self, count: int) -> None:
        while len(self.data) < count and not self.eof:
            self.fill()


def iter_parts(
    stream: Readable, boundary: str, *, max_part_bytes: int, deadline: float | None = None
) -> Iterator[tuple[dict[str, str], bytes]]:
    """(headers, body) of each part. Raises MultipartError (bad or truncated body) or
    TimeoutError (past `deadline`, a time.monotonic() value)."""
    separator = b"\r\n--" + boundary.encode("ascii")
    buffer = _Buffer(stream, deadline)
    index = buffer.find(separator, _MAX_PREAMBLE, "the first boundary")
    del buffer.data[: index + len(separator)]
    while True:
        buffer.need(2)
        if buffer.data[:2] == b"--":
            return  # the closing delimiter
        end_of_line = buffer.find(b"\r\n", _MAX_HEADERS, "the end of the boundary line")
        del buffer.data[: end_of_line + 2]
        headers: dict[str, str] = {}
        buffer.need(2)
        if buffer.data[:2] == b"\r\n":
            del buffer.data[:2]  # a part without headers
        else:
            end = buffer.find(b"\r\n\r\n", _MAX_HEADERS, "the end of the part headers")
            for line in bytes(buffer.data[:end]).decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            del buffer.data[: end + 4]
        end = buffer.find(separator, max_part_bytes, "the next boundary")
        body = bytes(buffer.data[:end])
        del buffer.data[: end + len(separator)]
        yield headers, body
