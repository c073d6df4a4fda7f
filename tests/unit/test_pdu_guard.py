"""The PDU guard's framing: limits per PDU type, deadlines, and read-ahead that never takes
bytes of the next PDU from the kernel (pynetdicom polls with select() between PDUs)."""

from __future__ import annotations

import select
import socket
import struct
import time

import pytest

from gateway.dicom.pdu_guard import GuardedSocket, PduFraming, PduLimits


def _pdu(pdu_type: int, body: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(body)) + body


def _guarded_pair(limits: PduLimits) -> tuple[GuardedSocket, socket.socket, list[str]]:
    ours, theirs = socket.socketpair()
    violations: list[str] = []
    guarded = GuardedSocket.adopt(ours, quickack=False, timeout_s=5.0)
    guarded.pdu_framing = PduFraming(limits, violations.append)
    return guarded, theirs, violations


def _read(sock: socket.socket, n: int) -> bytes:
    """As pynetdicom's AssociationSocket.recv: reads of at most 4096 until n or EOF."""
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(min(4096, n - len(out)))
        if not chunk:
            break
        out.extend(chunk)
    return bytes(out)


LIMITS = PduLimits(max_pdu_size=65536, association_request_timeout_s=2, pdu_timeout_s=2)


def test_read_ahead_stops_at_the_pdu_end_so_select_still_sees_the_next() -> None:
    guarded, peer, violations = _guarded_pair(LIMITS)
    first = _pdu(0x01, b"A" * 300) + _pdu(0x04, b"B" * 60000)
    second = _pdu(0x04, b"C" * 100)
    peer.sendall(first + second)
    time.sleep(0.05)  # both PDUs in the socket buffer
    for expected in (first[:306], first[306:]):
        header = _read(guarded, 6)
        body = _read(guarded, struct.unpack(">L", header[2:])[0])
        assert header + body == expected
    readable, _, _ = select.select([guarded], [], [], 0)
    assert readable == [guarded], "the next PDU must still be in the kernel"
    assert _read(guarded, 106) == second
    assert violations == []


def test_a_pdu_over_its_type_limit_ends_the_stream_after_its_header() -> None:
    guarded, peer, violations = _guarded_pair(LIMITS)
    peer.sendall(struct.pack(">BBL", 0x04, 0, 65536 + 1024 + 1) + b"x" * 100)
    assert guarded.recv(6) == b""
    assert "found a header claiming 66561" in violations[0]
    assert guarded.recv(4096) == b""  # stays closed


@pytest.mark.parametrize(("pdu_type", "length"), [(0x05, 5), (0x07, 100), (0x01, 2**20 + 1)])
def test_fixed_and_association_pdus_have_their_own_limits(pdu_type: int, length: int) -> None:
    guarded, peer, violations = _guarded_pair(LIMITS)
    peer.sendall(struct.pack(">BBL", pdu_type, 0, length))
    assert guarded.recv(6) == b""
    assert violations


def test_a_stalled_body_is_cut_at_the_deadline_not_per_read() -> None:
    guarded, peer, violations = _guarded_pair(LIMITS)
    peer.sendall(_pdu(0x01, b"A" * 10))  # the association request, whole
    assert len(_read(guarded, 16)) == 16
    peer.sendall(struct.pack(">BBL", 0x04, 0, 1000))
    started = time.monotonic()
    header = _read(guarded, 6)
    body = bytearray()
    while True:  # trickle: one byte every 0.5 s keeps any per-read timeout happy
        peer.sendall(b"x")
        chunk = guarded.recv(4096)
        if not chunk:
            break
        body.extend(chunk)
        time.sleep(0.5)
    assert len(header) == 6 and len(body) < 1000
    assert 2.0 <= time.monotonic() - started < 2.0 + 1.5  # deadline plus the slack
    assert "within 2 s" in violations[0]
