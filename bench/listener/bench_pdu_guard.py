"""Cost of the PDU guard on the listener's reads (gateway/dicom/pdu_guard.py).

Reads the same stream of 256 KiB P-DATA-TF PDUs from loopback TCP the way pynetdicom does
(6 header bytes, then the body in reads of at most 4096 bytes) through three sockets, in
alternation, several rounds: a plain socket, the former QuickAckSocket (TCP_QUICKACK before
each read) and the GuardedSocket (TCP_QUICKACK, deadline and framing checks). Reports the
reader's CPU time per MiB (process time of the reading thread, less sensitive to a busy
machine than wall time) and writes bench/results/pdu_guard.md.

    .venv/bin/python bench/listener/bench_pdu_guard.py [--mib 256] [--rounds 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import struct
import threading
import time
from pathlib import Path

from gateway.dicom.pdu_guard import GuardedSocket, PduFraming, PduLimits

REPO = Path(__file__).resolve().parents[2]
PDU_BODY = 262_144
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)


class QuickAckOnly(socket.socket):
    """What the listener used before: TCP_QUICKACK before every read, nothing else."""

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        return super().recv(bufsize, flags)


def _stream(total: int) -> bytes:
    pdu = struct.pack(">BBL", 0x04, 0, PDU_BODY) + b"\x00" * PDU_BODY
    return pdu * (total // PDU_BODY)


def _read_like_pynetdicom(sock: socket.socket, total: int) -> None:
    def read(n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = sock.recv(min(4096, n - len(out)))
            if not chunk:
                raise EOFError
            out.extend(chunk)
        return bytes(out)

    got = 0
    while got < total:
        header = read(6)
        _type, _reserved, length = struct.unpack(">BBL", header)
        read(length)
        got += 6 + length


def _measure(kind: str, payload: bytes) -> float:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    sender = threading.Thread(
        target=lambda: socket.create_connection(("127.0.0.1", port)).sendall(payload)
    )
    sender.start()
    raw, _ = server.accept()
    if kind == "plain":
        sock: socket.socket = raw
    elif kind == "quickack":
        sock = QuickAckOnly(raw.family, raw.type, raw.proto, fileno=raw.detach())
    else:
        guarded = GuardedSocket.adopt(raw, quickack=True, timeout_s=60.0)
        guarded.pdu_framing = PduFraming(
            PduLimits(max_pdu_size=PDU_BODY, association_request_timeout_s=60, pdu_timeout_s=60),
            on_violation=lambda reason: None,
        )
        sock = guarded
    started = time.thread_time()
    _read_like_pynetdicom(sock, len(payload))
    cpu = time.thread_time() - started
    sender.join()
    sock.close()
    server.close()
    return cpu / (len(payload) / 2**20) * 1e3  # ms of CPU per MiB


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/pdu_guard.md")
    args = parser.parse_args()
    payload = _stream(args.mib * 2**20)
    kinds = ("plain", "quickack", "guarded")
    results: dict[str, list[float]] = {kind: [] for kind in kinds}
    for _ in range(args.rounds):
        for kind in kinds:
            results[kind].append(_measure(kind, payload))
    base = statistics.median(results["quickack"])
    lines = [
        "# PDU guard: reader CPU per MiB",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        f"`bench/listener/bench_pdu_guard.py --mib {args.mib} --rounds {args.rounds}`: "
        f"{args.mib} MiB of 256 KiB P-DATA-TF PDUs over loopback TCP, read as pynetdicom reads "
        "(6-byte header, then 4096-byte reads), CPU time of the reading thread. Socket kinds "
        "alternate within each round, so load on the shared machine hits all alike.",
        "",
        "| socket | CPU ms per MiB, median (min-max) | vs QuickAck only |",
        "|---|---|---|",
    ]
    for kind in kinds:
        values = results[kind]
        median = statistics.median(values)
        lines.append(
            f"| {kind} | {median:.2f} ({min(values):.2f}-{max(values):.2f}) | "
            f"{median / base:.2f}x |"
        )
    lines.append("")
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
