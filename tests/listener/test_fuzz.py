"""Seeded protocol fuzz: malformed PDUs and datasets for a bounded time, then a real store.

Each case starts from a valid exchange (an A-ASSOCIATE-RQ, then a C-STORE's P-DATA) and
mutates it: flipped bytes, truncation, a random or extreme length field, an unknown PDU
type, trailing garbage, or a stall. The seed is printed on failure so a case can be rerun.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from sqlalchemy import Engine

from gateway.models import Instance
from tests.conftest import make_settings
from tests.dicom_samples import dataset_offset, write_series
from tests.integration.gateway_db import count_rows
from tests.listener.raw_pdus import associate_rq, connect, first_pdu_type, p_data_tf
from tests.scu import send_files

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
FUZZ_SECONDS = 12.0
MAX_CASES = 400
SEED = 20261127


def _c_store_rq(sop_instance_uid: str) -> bytes:
    """A C-STORE-RQ command set (implicit VR little endian, group length first)."""

    def element(group: int, elem: int, value: bytes) -> bytes:
        return struct.pack("<HHL", group, elem, len(value)) + value

    def uid(value: str) -> bytes:
        raw = value.encode("ascii")
        return raw + (b"\x00" if len(raw) % 2 else b"")

    body = element(0x0000, 0x0002, uid(CT_IMAGE_STORAGE))
    body += element(0x0000, 0x0100, struct.pack("<H", 0x0001))
    body += element(0x0000, 0x0110, struct.pack("<H", 1))
    body += element(0x0000, 0x0700, struct.pack("<H", 0))
    body += element(0x0000, 0x0800, struct.pack("<H", 0x0000))
    body += element(0x0000, 0x1000, uid(sop_instance_uid))
    return element(0x0000, 0x0000, struct.pack("<L", len(body))) + body


def _mutate(rng: random.Random, data: bytes) -> bytes:
    raw = bytearray(data)
    choice = rng.randrange(7)
    if choice == 0 and raw:  # flip bytes
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif choice == 1:  # truncate
        raw = raw[: rng.randrange(max(1, len(raw)))]
    elif choice == 2 and len(raw) >= 6:  # lie about the length
        length = rng.choice([0, 1, 5, len(raw), 0x7FFFFFFF, 0xFFFFFFFF, rng.randrange(1 << 32)])
        raw[2:6] = struct.pack(">L", length)
    elif choice == 3 and raw:  # unknown PDU type
        raw[0] = rng.choice([0x00, 0x08, 0x10, 0xFF])
    elif choice == 4:  # trailing garbage
        raw += rng.randbytes(rng.randint(1, 512))
    elif choice == 5:  # pure noise
        raw = bytearray(rng.randbytes(rng.randint(1, 2048)))
    # choice 6: unchanged (the stall path below still applies)
    return bytes(raw)


def _run_case(rng: random.Random, port: int, dataset: bytes) -> None:
    calling = rng.choice(["MODALITY", "INTRUDER", "", "A" * 16])
    request = associate_rq(
        calling=calling or "X",
        abstract_syntax=CT_IMAGE_STORAGE,
        transfer_syntax=ExplicitVRLittleEndian,
    )
    with connect(port, timeout_s=2.0) as sock:
        if rng.random() < 0.5:
            sock.sendall(_mutate(rng, request))
            first_pdu_type(sock, within_s=0.3)
            return
        sock.sendall(request)
        if first_pdu_type(sock, within_s=2.0) != 0x02:  # not accepted: nothing more to try
            return
        sock.recv(65536)  # rest of the A-ASSOCIATE-AC (best effort)
        command = p_data_tf(1, 0x03, _c_store_rq(f"1.2.3.{rng.randrange(10**9)}"))
        fragments = [command, p_data_tf(1, 0x02, dataset)]
        victim = rng.randrange(len(fragments))
        fragments[victim] = _mutate(rng, fragments[victim])
        for fragment in fragments:
            sock.sendall(fragment)
        if rng.random() < 0.2:
            return  # vanish mid-association
        first_pdu_type(sock, within_s=0.5)


# A crashed pynetdicom thread prints its traceback: a hostile peer must not cause one.
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_fuzzed_peers_never_stop_a_legitimate_store(
    start_gateway, tmp_path: Path, database_url: str, engine: Engine
) -> None:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        dicom={
            "allowed_peers": [{"ae_title": "*", "host": "127.0.0.1"}],
            "acse_timeout_s": 2.0,
            "pdu_timeout_s": 2.0,
            "rejection_audit_window_s": 5.0,
        },
    )
    gateway = start_gateway(settings)
    sample = write_series(tmp_path / "sample", 1)[0].read_bytes()
    dataset = sample[dataset_offset(sample) :]
    rng = random.Random(SEED)
    deadline = time.monotonic() + FUZZ_SECONDS
    cases = 0
    while cases < MAX_CASES and time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # the gateway closing on us answers garbage fine
            _run_case(rng, gateway.port, dataset)
        cases += 1
    assert cases >= 20, f"expected the fuzz loop to run, found {cases} cases"
    good = write_series(tmp_path / "good", 3)
    before = count_rows(engine, Instance)
    statuses = send_files(gateway.port, good, calling_ae="MODALITY")
    assert statuses == [0, 0, 0], f"seed {SEED}, {cases} cases: legitimate store got {statuses}"
    assert count_rows(engine, Instance) == before + 3
    # A valid association still opens and closes cleanly after all of it.
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(associate_rq(calling="MODALITY"))
        assert first_pdu_type(sock) == 0x02
    # No association (nor its connection slot) outlives its connection: every fuzzed peer
    # is gone, so within the deadlines every acceptor thread must have ended.
    deadline = time.monotonic() + 15
    while (left := _acceptor_threads()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], f"seed {SEED}: association threads left running: {left}"


def _acceptor_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("AcceptorThread@")]
