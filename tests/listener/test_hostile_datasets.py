"""Datasets built to hurt the listener: a deflate bomb, a cut-off deflate stream, sequences
nested thousands deep, a dataset larger than the bound. Each is refused with its status and
an audit event, nothing is stored, memory stays bounded, and a good instance still goes in.

The gateway runs in this process (a thread), so its peak memory is this process's VmHWM,
reset through /proc/self/clear_refs before each measured send.
"""

from __future__ import annotations

import json
import logging
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    ComprehensiveSRStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from sqlalchemy import Engine, select

from gateway.dicom import statuses
from gateway.models import AuditEvent
from gateway.settings import GatewaySettings
from tests.conftest import RunningGateway, make_settings
from tests.db_queries import instance_rows
from tests.dicom_samples import testdata as pydicom_test_file
from tests.dicom_samples import write_series
from tests.scu import association, raw_file_sending

MB = 1024 * 1024
MEMORY_GROWTH_LIMIT = 200 * MB


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: these tests are about the listener's memory and statuses, not the
    database (test_store.py covers both databases on the same refusal path)."""
    return f"sqlite:///{tmp_path / 'gateway.db'}"


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("expected VmHWM in /proc/self/status, found none")


def _header(sop_class: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    return ds


def _explicit_le(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _write_file(path: Path, ds: Dataset, transfer_syntax: str, body: bytes) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    path.write_bytes(buffer.getvalue() + body)
    return path


def _deflate_bomb(path: Path, inflated_value_bytes: int) -> Path:
    """A deflated dataset whose one OB value is `inflated_value_bytes` zeros: ~1 MB per GiB."""
    ds = _header(SecondaryCaptureImageStorage)
    head = _explicit_le(ds) + struct.pack("<HH2sHI", 0x0009, 0x1001, b"OB", 0, inflated_value_bytes)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    pieces, zeros = [deflater.compress(head)], bytes(16 * MB)
    left = inflated_value_bytes
    while left:
        pieces.append(deflater.compress(zeros[: min(left, len(zeros))]))
        left -= min(left, len(zeros))
    pieces.append(deflater.flush())
    body = b"".join(pieces)
    return _write_file(path, ds, DeflatedExplicitVRLittleEndian, body)


def _nested_sequences(path: Path, depth: int) -> Path:
    """Content Sequence inside Content Sequence, `depth` deep, all of undefined length."""
    ds = _header(ComprehensiveSRStorage)
    opening = struct.pack("<HH2sHI", 0x0040, 0xA730, b"SQ", 0, 0xFFFFFFFF)
    opening += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    body = _explicit_le(ds) + opening * depth + closing * depth
    return _write_file(path, ds, ExplicitVRLittleEndian, body)


def _oversize(path: Path, value_bytes: int) -> Path:
    """An Explicit VR Little Endian dataset with a private OB value of `value_bytes`."""
    ds = _header(SecondaryCaptureImageStorage)
    head = _explicit_le(ds) + struct.pack("<HH2sHI", 0x0009, 0x1001, b"OB", 0, value_bytes)
    _write_file(path, ds, ExplicitVRLittleEndian, head)
    with path.open("ab") as out:
        out.truncate(path.stat().st_size + value_bytes)  # sparse zeros: cheap to make
    return path


def _send(gateway: RunningGateway, paths: list[Path]) -> list[int]:
    found = []
    with raw_file_sending(), association(gateway.port, paths) as assoc:
        assert assoc.is_established, "association with the gateway was not established"
        for path in paths:
            status = assoc.send_c_store(path)
            found.append(int(status.Status) if "Status" in status else -1)
    return found


def _send_from_another_process(gateway: RunningGateway, paths: list[Path]) -> list[int]:
    """pynetdicom's SCU queues every P-DATA of a big dataset in memory before the socket
    takes it: send from a child process so that only the listener's memory is measured."""
    code = (
        "import sys, json; from pathlib import Path; from tests.scu import send_files; "
        "print(json.dumps(send_files(int(sys.argv[1]), [Path(p) for p in sys.argv[2:]])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(gateway.port), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    return list(json.loads(done.stdout.strip().splitlines()[-1]))


def _refusals(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(AuditEvent.detail).where(AuditEvent.kind == "instance.refused")
        ).all()
    return [row.detail for row in rows]


def _spooled(settings: GatewaySettings) -> list[Path]:
    return [p for p in settings.spool_dir.rglob("*") if p.is_file()]


@pytest.fixture
def good_instance(tmp_path: Path) -> Iterator[Path]:
    yield write_series(tmp_path / "good", 1)[0]


def test_deflate_bomb_is_refused_while_inflating_with_bounded_memory(
    gateway: RunningGateway, engine: Engine, tmp_path: Path, good_instance: Path
) -> None:
    bomb = _deflate_bomb(tmp_path / "bomb.dcm", 1024 * MB)  # > 1024 MiB inflated
    assert bomb.stat().st_size < 2 * MB, "expected a bomb of about 1 MB deflated"
    _peak_rss_reset()
    before = _peak_rss()
    assert _send(gateway, [bomb]) == [statuses.OUT_OF_RESOURCES]
    growth = _peak_rss() - before
    assert growth < MEMORY_GROWTH_LIMIT, f"peak RSS grew {growth / MB:.0f} MB"
    [refusal] = _refusals(engine)
    assert refusal["status"] == "0xA700"
    assert f"expected at most {1024 * MB} bytes inflated, found more" in refusal["reason"]
    assert instance_rows(engine) == {} and _spooled(gateway.settings) == []
    assert _send(gateway, [good_instance]) == [statuses.SUCCESS]
    assert len(instance_rows(engine)) == 1


def test_big_deflated_body_under_the_bound_is_stored(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    """Inflating past the header window (16 MiB) but within the bound: stored as received."""
    path = _deflate_bomb(tmp_path / "big.dcm", 40 * MB)
    assert _send(gateway, [path]) == [statuses.SUCCESS]
    [row] = instance_rows(engine).values()
    stored = (gateway.settings.spool_dir / row.file_path).read_bytes()
    assert stored.endswith(path.read_bytes()[-1000:])  # the deflated bytes, as received


def test_cut_off_deflate_stream_is_refused(
    gateway: RunningGateway, engine: Engine, tmp_path: Path, good_instance: Path
) -> None:
    whole = pydicom_test_file("image_dfl.dcm").read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole[:-64])
    assert _send(gateway, [cut, good_instance]) == [statuses.CANNOT_UNDERSTAND, statuses.SUCCESS]
    [refusal] = _refusals(engine)
    assert "expected a deflate stream that ends with its final block" in refusal["reason"]
    assert len(instance_rows(engine)) == 1


def test_thousands_of_nested_sequences_are_refused_in_one_line(
    gateway: RunningGateway,
    engine: Engine,
    tmp_path: Path,
    good_instance: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    nested = _nested_sequences(tmp_path / "nested.dcm", 10_000)
    with caplog.at_level(logging.INFO):
        found = _send(gateway, [nested, good_instance])
    assert found == [statuses.CANNOT_UNDERSTAND, statuses.SUCCESS]
    [refusal] = _refusals(engine)
    assert refusal["status"] == "0xC210"
    assert "expected sequences nested at most 64 deep, found deeper" in refusal["reason"]
    assert len(instance_rows(engine)) == 1
    problems = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert problems == [], [r.getMessage()[:200] for r in problems]
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1 and "\n" not in refused[0].getMessage()


def test_nesting_within_the_bound_is_stored(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    assert _send(gateway, [_nested_sequences(tmp_path / "n.dcm", 64)]) == [statuses.SUCCESS]
    assert len(instance_rows(engine)) == 1


def test_dataset_over_the_bound_is_discarded_as_it_arrives(
    tmp_path: Path, engine: Engine, start_gateway: Any, good_instance: Path
) -> None:
    settings = make_settings(tmp_path / "data", str(engine.url), dicom={"max_dataset_mb": 8})
    gateway = start_gateway(settings)
    oversize = _oversize(tmp_path / "oversize.dcm", 400 * MB)
    _peak_rss_reset()
    before = _peak_rss()
    # Same association: after the refusal it carries on and takes the good instance.
    assert _send_from_another_process(gateway, [oversize, good_instance]) == [
        statuses.OUT_OF_RESOURCES,
        statuses.SUCCESS,
    ]
    growth = _peak_rss() - before
    assert growth < MEMORY_GROWTH_LIMIT, f"peak RSS grew {growth / MB:.0f} MB"
    [refusal] = _refusals(engine)
    assert refusal["status"] == "0xA700"
    assert f"expected a dataset of at most {8 * MB} bytes, found " in refusal["reason"]
    assert len(instance_rows(engine)) == 1 and len(_spooled(settings)) == 1
