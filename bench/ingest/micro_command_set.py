"""CPU per C-STORE-RQ of turning its command set into the request primitive: pynetdicom's
way (pydicom `decode`, then `message_to_primitive` through the validating setters) against
gateway/dicom/store_request.py (the group 0000 elements read from the bytes). In process,
time.process_time, the two alternated so that a neighbour's load hits both alike.

    .venv/bin/python bench/ingest/micro_command_set.py [--iterations 20000] [--rounds 5]

Results: bench/results/ingest_command_set.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from pydicom.uid import generate_uid  # noqa: E402
from pynetdicom.dimse_messages import C_STORE_RQ  # noqa: E402
from pynetdicom.dimse_primitives import C_STORE  # noqa: E402
from pynetdicom.dsutils import decode, encode  # noqa: E402

from gateway.dicom.store_request import store_request  # noqa: E402


def command_set() -> bytes:
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    primitive.AffectedSOPInstanceUID = generate_uid()
    primitive.Priority = 2
    primitive.DataSet = BytesIO(b"")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True))


def pynetdicom_way(encoded: bytes) -> C_STORE:
    message = C_STORE_RQ()
    message.command_set = decode(BytesIO(encoded), True, True)
    message.context_id = 1
    primitive: C_STORE = message.message_to_primitive()
    return primitive


def gateway_way(encoded: bytes) -> C_STORE:
    message = store_request(encoded, 1)
    assert message is not None
    return message.message_to_primitive()


def per_call_ms(way: Callable[[bytes], C_STORE], encoded: bytes, iterations: int) -> float:
    started = time.process_time()
    for _ in range(iterations):
        way(encoded)
    return (time.process_time() - started) / iterations * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    encoded = command_set()
    assert (
        gateway_way(encoded).AffectedSOPInstanceUID
        == pynetdicom_way(encoded).AffectedSOPInstanceUID
    )
    slow: list[float] = []
    fast: list[float] = []
    for _ in range(args.rounds):
        slow.append(per_call_ms(pynetdicom_way, encoded, args.iterations))
        fast.append(per_call_ms(gateway_way, encoded, args.iterations))
    ratios = [s / f for s, f in zip(slow, fast, strict=True)]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# C-STORE-RQ command set to request primitive: CPU per request",
        "",
        f"`bench/ingest/micro_command_set.py --iterations {args.iterations} --rounds "
        f"{args.rounds}`, {when}, {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}. process_time "
        "per request, median (min-max) of the rounds, the two ways alternated.",
        "",
        "| way | ms per request |",
        "|---|---|",
        f"| pynetdicom (pydicom `decode` + `message_to_primitive`) | {statistics.median(slow):.3f} "
        f"({min(slow):.3f}-{max(slow):.3f}) |",
        f"| gateway/dicom/store_request.py | {statistics.median(fast):.3f} "
        f"({min(fast):.3f}-{max(fast):.3f}) |",
        f"| ratio, same round (median) | {statistics.median(ratios):.1f}x |",
        "",
    ]
    out = REPO / "bench" / "results" / "ingest_command_set.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
