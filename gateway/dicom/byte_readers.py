"""Forward-only readers over a received body: as it is, or inflated as it is read.

A deflated body is inflated in bounded chunks (`zlib.decompressobj` with `max_length`), so a
small body that inflates to gigabytes (a deflate bomb) is refused after at most the bound,
never held whole. Only the first `keep_bytes` inflated bytes are kept, for the header.
"""

from __future__ import annotations

import zlib
from typing import Protocol

from gateway.dicom.dataset_limits import DatasetTooLarge

_INPUT_CHUNK = 256 * 1024
_OUTPUT_CHUNK = 1024 * 1024


class InflateError(Exception):
    """The body is not a whole deflate stream; the message says what was found."""


class ByteReader(Protocol):
    position: int

    def read(self, size: int) -> bytes:
        """Up to `size` bytes; fewer only at the end."""
        ...

    def skip(self, size: int) -> int:
        """Move forward up to `size` bytes; return how many there were."""
        ...


class BufferReader:
    def __init__(self, data: bytes | memoryview) -> None:
        self._data = memoryview(data)  # no copy: the body may be large
        self._size = len(self._data)
        self.position = 0

    def read(self, size: int) -> bytes:
        start = self.position
        data = bytes(self._data[start : start + size])
        self.position = start + len(data)
        return data

    def skip(self, size: int) -> int:
        start = self.position
        end = start + size
        if end > self._size:
            end = self._size
        self.position = end
        return end - start


class InflatingReader:
    """Reads a raw deflate stream (PS3.5 A.5: RFC 1951, no zlib header) as it inflates."""

    def __init__(self, deflated: bytes | memoryview, *, max_bytes: int, keep_bytes: int) -> None:
        self._source = memoryview(deflated)
        self._consumed = 0  # of the deflated input
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._pending = bytearray()  # inflated, not yet read
        self._max_bytes = max_bytes
        self._keep_bytes = keep_bytes
        self.kept = bytearray()  # the first keep_bytes inflated bytes
        self.inflated = 0  # bytes inflated so far
        self.position = 0

    def _inflate_more(self) -> bool:
        """Inflate one more chunk into `_pending`; False at the end of the stream."""
        inflater = self._inflater
        if inflater.eof:
            return False
        try:
            if inflater.unconsumed_tail:
                data = inflater.decompress(inflater.unconsumed_tail, _OUTPUT_CHUNK)
            elif self._consumed < len(self._source):
                piece = self._source[self._consumed : self._consumed + _INPUT_CHUNK]
                self._consumed += len(piece)
                data = inflater.decompress(piece, _OUTPUT_CHUNK)
            else:
                raise InflateError(
                    "expected a deflate stream that ends with its final block, found it cut "
                    f"off after {len(self._source)} deflated bytes ({self.inflated} inflated)"
                )
        except zlib.error as exc:
            raise InflateError(
                f"expected a deflated body, found bytes that do not inflate ({exc})"
            ) from exc
        self.inflated += len(data)
        if self.inflated > self._max_bytes:
            raise DatasetTooLarge(
                f"expected at most {self._max_bytes} bytes inflated, found more "
                f"(from {self._consumed} deflated bytes)"
            )
        if len(self.kept) < self._keep_bytes:
            self.kept += data[: self._keep_bytes - len(self.kept)]
        self._pending += data
        return True

    def read(self, size: int) -> bytes:
        while len(self._pending) < size and self._inflate_more():
            pass
        data = bytes(self._pending[:size])
        del self._pending[:size]
        self.position += len(data)
        return data

    def skip(self, size: int) -> int:
        skipped = 0
        while skipped < size:
            if not self._pending and not self._inflate_more():
                break
            step = min(size - skipped, len(self._pending))
            del self._pending[:step]
            skipped += step
        self.position += skipped
        return skipped

    def drain(self) -> None:
        """Inflate to the end (counting, keeping nothing): checks the bound and the end."""
        while self._inflate_more():
            self._pending.clear()
