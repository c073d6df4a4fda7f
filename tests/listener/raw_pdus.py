"""Hand-built DICOM upper-layer PDUs (PS3.8 9.3), for peers that misbehave on purpose."""

from __future__ import annotations

import socket
import struct
import time

from pydicom.uid import ImplicitVRLittleEndian

VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(value)) + value


def _uid(value: str) -> bytes:
    return value.encode("ascii")


def associate_rq(
    *,
    calling: str = "MODALITY",
    called: str = "PACSGATEWAY",
    abstract_syntax: str = VERIFICATION,
    transfer_syntax: str = ImplicitVRLittleEndian,
    max_length: int = 16384,
) -> bytes:
    """A valid A-ASSOCIATE-RQ with one presentation context (ID 1)."""
    context = struct.pack(">BBBB", 1, 0, 0, 0)
    context += _item(0x30, _uid(abstract_syntax)) + _item(0x40, _uid(transfer_syntax))
    user_information = _item(0x51, struct.pack(">L", max_length))
    body = struct.pack(">HH", 1, 0)
    body += called.ljust(16).encode("ascii") + calling.ljust(16).encode("ascii")
    body += b"\x00" * 32
    body += _item(0x10, _uid(APPLICATION_CONTEXT))
    body += _item(0x20, context)
    body += _item(0x50, user_information)
    return struct.pack(">BBL", 0x01, 0, len(body)) + body


def p_data_tf(context_id: int, control: int, fragment: bytes) -> bytes:
    """One P-DATA-TF with one PDV item (control: bit 0 command, bit 1 last fragment)."""
    pdv = struct.pack(">LBB", len(fragment) + 2, context_id, control) + fragment
    return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv


def connect(port: int, *, source: str = "127.0.0.1", timeout_s: float = 5.0) -> socket.socket:
    sock = socket.create_connection(
        ("127.0.0.1", port), timeout=timeout_s, source_address=(source, 0)
    )
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def closed_by_peer(sock: socket.socket, within_s: float) -> bool:
    """True once the peer has closed (or reset) the connection within `within_s`."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            if sock.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def first_pdu_type(sock: socket.socket, within_s: float = 5.0) -> int | None:
    """The type of the first PDU the peer answers with; None if it closed without one."""
    sock.settimeout(within_s)
    header = b""
    while len(header) < 6:
        try:
            data = sock.recv(6 - len(header))
        except OSError:
            return None
        if not data:
            return None
        header += data
    return header[0]
