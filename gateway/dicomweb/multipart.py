"""multipart/related (RFC 2387) read as a stream: each part's bytes are handed on in chunks
as they arrive, so memory holds one chunk and a delimiter's length, never a whole part or a
whole body. Also the writer side: parts of a response, one at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

CHUNK_BYTES = 256 * 1024
MAX_PREAMBLE_BYTES = 64 * 1024
MAX_PART_HEADER_BYTES = 16 * 1024
_CRLF = b"\r\n"


class MultipartError(Exception):
    """The body is not the multipart/related message its Content-Type announced."""


@dataclass(frozen=True)
class MediaType:
    """A Content-Type or Accept entry: its type and parameters (names lower case)."""

    type: str
    parameters: dict[str, str]

    @classmethod
    def parse(cls, value: str) -> MediaType:
        """Lenient: DICOMweb clients send unquoted values with '/' (`type=application/dicom`,
        OHIF with omitQuotationForMultipartRequest), which RFC 9110 parsers cut short."""
        items = split_unquoted(value, ";")
        parameters = {}
        for item in items[1:]:
            name, equals, raw = item.partition("=")
            if equals and name.strip():
                text = raw.strip()
                if len(text) >= 2 and text[0] == text[-1] == '"':
                    text = text[1:-1].replace('\\"', '"')
                parameters[name.strip().lower()] = text
        return cls((items[0] if items else "").strip().lower(), parameters)


def split_unquoted(text: str, separator: str) -> list[str]:
    """`text` split at `separator` outside double quotes."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == separator and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return [item.strip() for item in items]


def boundary_of(content_type: MediaType) -> bytes:
    boundary = content_type.parameters.get("boundary", "")
    if not 1 <= len(boundary) <= 70:
        raise MultipartError(
            f"expected a boundary parameter of 1 to 70 characters in the Content-Type, "
            f"found {len(boundary)} characters"
        )
    return boundary.encode("latin-1")


class MultipartReader:
    """Parts of one multipart body, read through `read(n)` (which returns b"" at the end).

    Iterate `parts()`; consume each part's `chunks` before asking for the next part.
    """

    def __init__(
        self, read: Callable[[int], bytes], boundary: bytes, chunk_bytes: int = CHUNK_BYTES
    ) -> None:
        self._read = read
        self._chunk_bytes = chunk_bytes
        self._delimiter = _CRLF + b"--" + boundary
        # The first delimiter may start the body without a CRLF before it.
        self._buffer = bytearray(_CRLF)
        self._ended = False

    def _fill(self) -> bool:
        if self._ended:
            return False
        data = self._read(self._chunk_bytes)
        if not data:
            self._ended = True
            return False
        self._buffer += data
        return True

    def _need(self, size: int, what: str) -> None:
        while len(self._buffer) < size:
            if not self._fill():
                raise MultipartError(f"expected {what}, found the end of the body")

    def _skip_preamble(self) -> None:
        while True:
            at = self._buffer.find(self._delimiter)
            if at >= 0:
                del self._buffer[: at + len(self._delimiter)]
                return
            if len(self._buffer) > MAX_PREAMBLE_BYTES:
                raise MultipartError(
                    f"expected the first boundary within {MAX_PREAMBLE_BYTES} bytes, found none"
                )
            if not self._fill():
                raise MultipartError("expected a boundary, found the end of the body")

    def _after_delimiter(self) -> bool:
        """Past a delimiter: True if a part follows, False at the close delimiter."""
        self._need(2, "a part or the closing boundary")
        if self._buffer.startswith(b"--"):
            return False  # the epilogue, if any, is ignored (and not read)
        while (end := self._buffer.find(_CRLF)) < 0:
            if len(self._buffer) > 1024:
                raise MultipartError("expected CRLF after the boundary, found none")
            self._need(len(self._buffer) + 1, "CRLF after the boundary")
        if self._buffer[:end].strip(b" \t"):
            raise MultipartError("expected CRLF after the boundary, found other bytes")
        del self._buffer[: end + 2]
        return True

    def _headers(self) -> dict[str, str]:
        while True:
            if self._buffer.startswith(_CRLF):  # no headers at all
                del self._buffer[:2]
                return {}
            end = self._buffer.find(_CRLF + _CRLF)
            if end >= 0:
                break
            if len(self._buffer) > MAX_PART_HEADER_BYTES:
                raise MultipartError(
                    f"expected part headers within {MAX_PART_HEADER_BYTES} bytes, found more"
                )
            self._need(len(self._buffer) + 1, "the end of a part's headers")
        block = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        headers: dict[str, str] = {}
        for line in block.split("\r\n"):
            name, colon, value = line.partition(":")
            if not colon or not name.strip():
                raise MultipartError("expected part headers as 'Name: value', found another line")
            headers[name.strip().lower()] = value.strip()
        return headers

    def _body(self) -> Iterator[bytes]:
        keep = len(self._delimiter) - 1  # a delimiter may straddle two reads
        while True:
            at = self._buffer.find(self._delimiter)
            if at >= 0:
                if at:
                    yield bytes(self._buffer[:at])
                del self._buffer[: at + len(self._delimiter)]
                return
            if len(self._buffer) > keep:
                cut = len(self._buffer) - keep
                yield bytes(self._buffer[:cut])
                del self._buffer[:cut]
            if not self._fill():
                raise MultipartError("expected a boundary after a part, found the end of the body")

    def parts(self) -> Iterator[Part]:
        self._skip_preamble()
        while self._after_delimiter():
            part = Part(self._headers(), self._body())
            yield part
            for _ in part.chunks:  # whatever the consumer left unread
                pass


@dataclass
class Part:
    headers: dict[str, str]
    chunks: Iterator[bytes]

    @property
    def content_type(self) -> MediaType | None:
        value = self.headers.get("content-type")
        return None if value is None else MediaType.parse(value)


def part_header(boundary: str, content_type: str, extra: dict[str, str] | None = None) -> bytes:
    """The delimiter and headers that open a part of a response."""
    lines = [f"--{boundary}", f"Content-Type: {content_type}"]
    lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("latin-1")
