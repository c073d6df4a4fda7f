"""Accepted associations wait for work instead of polling (gateway/dicom/reactors.py)."""

from __future__ import annotations

import socket
import struct
import time

from tests.conftest import GATEWAY_AE, RunningGateway
from tests.listener.raw_pdus import associate_rq, connect

A_ASSOCIATE_AC, A_RELEASE_RP = 0x02, 0x06
A_RELEASE_RQ = struct.pack(">BBLL", 0x05, 0, 4, 0)
IDLE_ASSOCIATIONS = 5


def _read_pdu(sock: socket.socket) -> int:
    """The type of the next whole PDU (read to its end)."""
    sock.settimeout(5)
    data = b""
    while len(data) < 6 or len(data) < 6 + struct.unpack(">L", data[2:6])[0]:
        chunk = sock.recv(65536)
        assert chunk, "expected a PDU, found the connection closed"
        data += chunk
    return data[0]


def _associate(port: int) -> socket.socket:
    sock = connect(port)
    sock.sendall(associate_rq(called=GATEWAY_AE))
    assert _read_pdu(sock) == A_ASSOCIATE_AC, "expected the association accepted"
    return sock


def _cpu_while_idle(seconds: float) -> float:
    """CPU seconds this process (the gateway's threads; the test only sleeps) used."""
    start = time.process_time()
    time.sleep(seconds)
    return time.process_time() - start


def test_idle_associations_use_no_cpu_and_release_at_once(gateway: RunningGateway) -> None:
    baseline = _cpu_while_idle(1.0)  # the gateway's own background threads
    sockets = [_associate(gateway.port) for _ in range(IDLE_ASSOCIATIONS)]
    try:
        idle = _cpu_while_idle(1.0)
        # pynetdicom's polling loops (0.1-1 ms sleeps) burn about 0.1 s of CPU per idle
        # association per second on this kind of machine; waiting loops close to none.
        assert idle - baseline < 0.05 * IDLE_ASSOCIATIONS, (
            f"expected idle associations to wait without CPU, found {idle:.3f} s CPU in 1 s "
            f"with {IDLE_ASSOCIATIONS} open against {baseline:.3f} s without"
        )
        for sock in sockets:  # the association thread wakes for the release at once
            started = time.monotonic()
            sock.sendall(A_RELEASE_RQ)
            assert _read_pdu(sock) == A_RELEASE_RP, "expected an A-RELEASE-RP"
            assert time.monotonic() - started < 0.5
    finally:
        for sock in sockets:
            sock.close()
