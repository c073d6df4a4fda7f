"""Deadlines and size limits on every PDU a peer sends, enforced as the bytes are read.

pynetdicom reads a PDU as "6 header bytes, then as many bytes as the header claims", each
read blocking on the socket with only a per-call timeout. A peer that sends a header and
then trickles (or nothing) holds the connection, and its association slot, for as long as it
likes; a header claiming 4 GiB makes pynetdicom buffer whatever arrives. This guard sits in
the socket under pynetdicom (every read passes through `recv`), follows the PDU framing
itself, and:

- checks each PDU's length against the limit for its type as soon as the 6-byte header is
  in, before one byte of the body is read;
- gives each PDU a deadline from its first byte (and the first PDU, the A-ASSOCIATE-RQ, a
  deadline from the moment the connection was accepted), so no read waits past it.

On a violation it reports the reason once, shuts the connection down and answers the read
as end of stream, which pynetdicom handles as a closed transport (Evt17): one log line of
ours, no traceback.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LOGGER = logging.getLogger(__name__)
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only

PDU_HEADER_LENGTH = 6
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07
# Real association PDUs are a few KiB (128 presentation contexts with a dozen transfer
# syntaxes each stay under 64 KiB); user identity negotiation may add a SAML assertion.
ASSOCIATION_PDU_MAX = 1024 * 1024
# A-RELEASE-RQ/RP and A-ABORT have a 4-byte body (PS3.8 9.3.6-9.3.8).
FIXED_PDU_LENGTH = 4
# Some senders count the PDV item headers outside the Maximum Length Received; tolerate
# a little over the limit we announce rather than abort a real modality.
P_DATA_SLACK = 1024
# With max_pdu_size 0 ("unlimited") we still refuse what no sender needs.
P_DATA_HARD_MAX = 64 * 1024 * 1024
# A read may overrun its PDU's deadline by at most this much (see _guarded_recv).
DEADLINE_SLACK_S = 1.0
READ_AHEAD = 256 * 1024  # largest read inside a PDU body


@dataclass(frozen=True, slots=True)
class PduLimits:
    """What a peer may send: sizes per PDU type and deadlines (seconds)."""

    max_pdu_size: int  # the Maximum Length Received we announce; 0 means unlimited
    association_request_timeout_s: float  # accept -> complete A-ASSOCIATE-RQ
    pdu_timeout_s: float  # first byte -> last byte of any later PDU

    def max_length(self, pdu_type: int) -> int | None:
        """The largest body length allowed for `pdu_type`; None for an unknown type."""
        if pdu_type == P_DATA_TF:
            if self.max_pdu_size == 0:
                return P_DATA_HARD_MAX
            return self.max_pdu_size + P_DATA_SLACK
        if pdu_type in (A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ):
            return ASSOCIATION_PDU_MAX
        if pdu_type in (A_RELEASE_RQ, A_RELEASE_RP, A_ABORT):
            return FIXED_PDU_LENGTH
        return None  # pynetdicom answers an unknown type with an A-ABORT itself


class PduViolation(Exception):
    """The peer broke a limit; the message says what was expected and what was found."""


class PduFraming:
    """Follows the PDU stream read from one connection and enforces `PduLimits`."""

    def __init__(
        self,
        limits: PduLimits,
        on_violation: Callable[[str], None],
        *,
        accepted_at: float | None = None,
    ) -> None:
        self.limits = limits
        self.on_violation = on_violation
        self._header = bytearray()
        self._body_left = 0
        self._first_pdu = True
        start = time.monotonic() if accepted_at is None else accepted_at
        self.deadline: float | None = start + limits.association_request_timeout_s
        self.violated = False

    def timeout_for_read(self) -> float | None:
        """Seconds the next read may block, or raise once the deadline has passed."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            what = "A-ASSOCIATE-RQ" if self._first_pdu else "PDU"
            limit = (
                self.limits.association_request_timeout_s
                if self._first_pdu
                else self.limits.pdu_timeout_s
            )
            raise PduViolation(f"expected the whole {what} within {limit:g} s, found it incomplete")
        return left

    @property
    def body_left(self) -> int:
        """Bytes of the current PDU's body not read yet (0 between PDUs and in a header)."""
        return self._body_left

    def before_read(self) -> None:
        """Arm the deadline of a PDU whose first byte is about to be read."""
        if not self._first_pdu and not self._header and self._body_left == 0:
            self.deadline = time.monotonic() + self.limits.pdu_timeout_s

    def consumed(self, data: bytes | bytearray | memoryview) -> None:
        """Account for bytes handed to pynetdicom; check each header once it is whole."""
        size = len(data)
        if size < self._body_left:  # the common case: a read inside a PDU's body
            self._body_left -= size
            return
        view = memoryview(data)
        while view:
            if self._body_left:
                taken = min(self._body_left, len(view))
                self._body_left -= taken
                view = view[taken:]
                if self._body_left == 0:
                    self._pdu_done()
                continue
            need = PDU_HEADER_LENGTH - len(self._header)
            self._header.extend(view[:need])
            view = view[need:]
            if len(self._header) == PDU_HEADER_LENGTH:
                self._check_header()

    def _check_header(self) -> None:
        pdu_type, _reserved, length = struct.unpack(">BBL", self._header)
        self._header.clear()
        limit = self.limits.max_length(pdu_type)
        if limit is not None and length > limit:
            raise PduViolation(
                f"expected a PDU of type 0x{pdu_type:02X} of at most {limit} bytes, "
                f"found a header claiming {length}"
            )
        self._body_left = length
        if length == 0:
            self._pdu_done()

    def _pdu_done(self) -> None:
        self._first_pdu = False
        self.deadline = None  # the next PDU's deadline starts with its first byte


class _GuardMixin:
    """`recv` with the framing guard (and, optionally, TCP_QUICKACK before each read)."""

    pdu_framing: PduFraming | None = None
    quickack: bool = False
    base_timeout: float | None = None  # restored between PDUs (sends use it)
    _ahead: bytes = b""  # read from the kernel; from _ahead_at on not yet handed over
    _ahead_at: int = 0

    def _guarded_recv(self, read: Callable[[int, int], bytes], bufsize: int, flags: int) -> bytes:
        framing = self.pdu_framing
        if framing is None or framing.violated:
            return read(bufsize, flags) if framing is None else b""
        if self._ahead_at < len(self._ahead):  # read ahead inside this PDU's body earlier
            start = self._ahead_at
            self._ahead_at = start + bufsize
            return self._ahead[start : self._ahead_at]
        sock: Any = self
        try:
            framing.before_read()
            left = framing.timeout_for_read()
            # Lower the socket's timeout only when the deadline is nearer than it by more
            # than the slack: about once per PDU, not once per read (each settimeout is a
            # system call; measured in bench/results/pdu_guard.md).
            current = sock.gettimeout()
            if left is not None and (current is None or left < current - DEADLINE_SLACK_S):
                sock.settimeout(left)
            # pynetdicom reads a PDU body 4096 bytes at a time; inside a body we read up to
            # READ_AHEAD at once and serve the rest from memory. Never past the PDU's end:
            # pynetdicom polls the socket (select) before each PDU, and data already taken
            # from the kernel would not wake it.
            size = max(bufsize, min(framing.body_left, READ_AHEAD))
            try:
                data = read(size, flags)
            except TimeoutError:
                framing.timeout_for_read()  # raises with the reason once the deadline passed
                raise
            framing.consumed(data)
            if framing.deadline is None and sock.gettimeout() != self.base_timeout:
                sock.settimeout(self.base_timeout)  # between PDUs: sends use the base timeout
            if len(data) > bufsize:
                self._ahead, self._ahead_at = data, bufsize
                return data[:bufsize]
            return data
        except PduViolation as exc:
            framing.violated = True
            framing.on_violation(str(exc))
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            return b""  # end of stream: pynetdicom closes the transport (Evt17)


class GuardedSocket(_GuardMixin, socket.socket):
    """A plain TCP socket whose reads are guarded."""

    @classmethod
    def adopt(cls, raw: socket.socket, *, quickack: bool, timeout_s: float) -> GuardedSocket:
        """Take over `raw`; every later read and send has a timeout (accepted sockets have
        none: a peer that stops reading our responses would block a send for ever)."""
        adopted = cls(raw.family, raw.type, raw.proto, fileno=raw.detach())
        adopted.settimeout(timeout_s)
        adopted.base_timeout = timeout_s
        adopted.quickack = quickack and _TCP_QUICKACK is not None
        return adopted

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self.quickack:
            # Linux clears the flag by itself, hence before every read.
            self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)  # type: ignore[arg-type]
        return self._guarded_recv(super().recv, bufsize, flags)


class GuardedSSLSocket(_GuardMixin, ssl.SSLSocket):
    """A TLS socket whose decrypted reads are guarded (set as `SSLContext.sslsocket_class`)."""

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        return self._guarded_recv(super().recv, buflen, flags)
