"""C-STORE into the gateway: stored byte-identical, indexed, idempotent, bad input refused."""

from __future__ import annotations

import socket
import threading
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import generate_uid
from sqlalchemy import Engine

from gateway.dicom import statuses
from tests.conftest import RunningGateway
from tests.db_queries import audit_kinds, instance_rows
from tests.dicom_samples import (
    ct_instance,
    dataset_offset,
    encode,
    storage_test_files,
    write_series,
)
from tests.scu import send_files

# Bad input that pydicom ships on purpose: truncated, and a body in implicit VR under a
# JPEG Baseline (explicit VR) transfer syntax. Refused with 0xC210, never stored.
BAD_TEST_FILES = {"MR_truncated.dcm", "rtplan_truncated.dcm", "SC_rgb_jpeg.dcm"}


def stored_body(gateway: RunningGateway, relative_path: str) -> bytes:
    data = (gateway.settings.spool_dir / relative_path).read_bytes()
    return data[dataset_offset(data) :]


def test_every_pydicom_storage_file_round_trips(gateway: RunningGateway, engine: Engine) -> None:
    files = storage_test_files()
    assert len(files) > 40, f"expected pydicom's test files, found {len(files)}"
    statuses_by_file = {}
    for path in files:  # one association per file: each has its own contexts
        statuses_by_file[path.name] = send_files(gateway.port, [path])[0]
    rows = instance_rows(engine)
    first_sent: dict[str, Path] = {}  # several pydicom files share a SOP Instance UID
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        if path.name in BAD_TEST_FILES:
            assert statuses_by_file[path.name] == statuses.CANNOT_UNDERSTAND, path.name
            continue
        assert statuses_by_file[path.name] == statuses.SUCCESS, path.name
        uid = str(ds.SOPInstanceUID)
        first_sent.setdefault(uid, path)
        row = rows.get(uid)
        if row is None or not (gateway.settings.spool_dir / row.file_path).is_file():
            pytest.fail(f"{path.name}: acknowledged but not stored")
        # The stored bytes are exactly those of the first file sent with this UID.
        source = first_sent[uid].read_bytes()
        assert stored_body(gateway, row.file_path) == source[dataset_offset(source) :], path.name
        stored = dcmread(gateway.settings.spool_dir / row.file_path, stop_before_pixels=True)
        assert str(stored.file_meta.TransferSyntaxUID) == row.transfer_syntax_uid
        assert row.sop_class_uid == str(ds.SOPClassUID)
    kinds = audit_kinds(engine)
    assert kinds["instance.refused"] == len(BAD_TEST_FILES)
    accepted = len(files) - len(BAD_TEST_FILES)
    assert kinds["instance.stored"] == len(rows) == len(first_sent)
    assert kinds["instance.duplicate"] == accepted - len(first_sent)


def test_compressed_and_deflated_files_are_stored_as_received(
    gateway: RunningGateway, engine: Engine
) -> None:
    names = [
        "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline
        "JPEG-lossy.dcm",  # JPEG extended
        "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS
        "JPEG2000.dcm",  # JPEG 2000
        "SC_rgb_rle.dcm",  # RLE
        "image_dfl.dcm",  # deflated
    ]
    from tests.dicom_samples import testdata

    paths = [testdata(name) for name in names]
    assert send_files(gateway.port, paths) == [statuses.SUCCESS] * len(paths)
    rows = instance_rows(engine)
    for path in paths:
        source = path.read_bytes()
        ds = dcmread(path, stop_before_pixels=True)
        row = rows[str(ds.SOPInstanceUID)]
        assert row.transfer_syntax_uid == str(ds.file_meta.TransferSyntaxUID)
        assert stored_body(gateway, row.file_path) == source[dataset_offset(source) :], path.name
    deflated = rows[str(dcmread(paths[-1], stop_before_pixels=True).SOPInstanceUID)]
    body = stored_body(gateway, deflated.file_path)
    assert zlib.decompressobj(-zlib.MAX_WBITS).decompress(body)  # still deflated on disk


def test_index_holds_routing_attributes(gateway: RunningGateway, engine: Engine, tmp_path: Path):
    paths = write_series(tmp_path / "series", 3)
    assert send_files(gateway.port, paths) == [0, 0, 0]
    from sqlalchemy import select

    from gateway.models import Series, Study

    with engine.connect() as connection:
        series = connection.execute(select(Series)).one()
        study = connection.execute(select(Study)).one()
    assert (series.modality, series.body_part_examined, series.series_description) == (
        "CT",
        "CHEST",
        "AXIAL 1mm",
    )
    assert series.instance_count == 3 and study.instance_count == 3
    assert series.slice_thickness == 1.0
    assert study.study_description == "CT CHEST" and study.first_calling_ae == "MODALITY"
    rows = instance_rows(engine)
    assert sorted(r.instance_number for r in rows.values()) == [1, 2, 3]
    assert all(r.calling_ae == "MODALITY" and r.size_bytes > 8000 for r in rows.values())


def test_same_instance_twice_is_stored_once(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    path = write_series(tmp_path / "series", 1)[0]
    assert send_files(gateway.port, [path, path]) == [0, 0]
    assert send_files(gateway.port, [path]) == [0]
    assert len(instance_rows(engine)) == 1
    kinds = audit_kinds(engine)
    assert kinds["instance.stored"] == 1
    assert kinds["instance.duplicate"] == 2
    series_dir = next(gateway.settings.spool_dir.glob("*/*"))
    assert len(list(series_dir.iterdir())) == 1  # no second file, no temporary left


def test_same_instance_from_concurrent_associations(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    path = write_series(tmp_path / "series", 1)[0]
    results: list[list[int]] = []

    def _send() -> None:
        results.append(send_files(gateway.port, [path] * 5))

    threads = [threading.Thread(target=_send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [[0] * 5] * 4
    assert len(instance_rows(engine)) == 1
    kinds = audit_kinds(engine)
    assert kinds["instance.stored"] == 1 and kinds["instance.duplicate"] == 19
    # Whichever association committed first, exactly its file remains, and the row names it.
    row = instance_rows(engine)[path_uid(path)]
    assert _spool_files(gateway) == [gateway.settings.spool_dir / row.file_path]


def file_meta_bytes(ds: Dataset) -> bytes:
    buffer = DicomBytesIO()
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, ds.file_meta, enforce_standard=True)
    return buffer.getvalue()


def path_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def _spool_files(gateway: RunningGateway) -> list[Path]:
    return [p for p in gateway.settings.spool_dir.rglob("*") if p.is_file()]


def test_resending_an_instance_whose_file_was_lost_restores_it(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    path = write_series(tmp_path / "series", 1)[0]
    assert send_files(gateway.port, [path]) == [0]
    row = instance_rows(engine)[path_uid(path)]
    (gateway.settings.spool_dir / row.file_path).unlink()  # e.g. restored from an old backup
    assert send_files(gateway.port, [path]) == [0]
    repaired = instance_rows(engine)[path_uid(path)]
    source = path.read_bytes()
    assert stored_body(gateway, repaired.file_path) == source[dataset_offset(source) :]
    assert _spool_files(gateway) == [gateway.settings.spool_dir / repaired.file_path]


def test_lost_file_under_a_unique_name_is_repaired_from_a_resend(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    path = write_series(tmp_path / "series", 1)[0]
    ds = dcmread(path, stop_before_pixels=True)
    folder = gateway.settings.spool_dir / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID)
    folder.mkdir(parents=True)
    orphan = folder / f"{ds.SOPInstanceUID}.dcm"  # left by a crash before its row committed
    orphan.write_bytes(b"incomplete")
    assert send_files(gateway.port, [path]) == [0]
    first = instance_rows(engine)[path_uid(path)]
    assert first.file_path != str(orphan.relative_to(gateway.settings.spool_dir))
    (gateway.settings.spool_dir / first.file_path).unlink()
    assert send_files(gateway.port, [path]) == [0]
    repaired = instance_rows(engine)[path_uid(path)]
    source = path.read_bytes()
    assert stored_body(gateway, repaired.file_path) == source[dataset_offset(source) :]
    assert audit_kinds(engine)["instance.repaired"] == 1
    assert orphan.read_bytes() == b"incomplete"  # an orphan is never taken for the instance


def test_truncated_file_is_refused_and_nothing_stored(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    whole = encode(ct_instance(generate_uid(), generate_uid(), 0))
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(whole[: len(whole) - 3000])
    assert send_files(gateway.port, [truncated]) == [statuses.CANNOT_UNDERSTAND]
    assert instance_rows(engine) == {}
    assert _spool_files(gateway) == []
    assert audit_kinds(engine)["instance.refused"] == 1


def test_body_in_another_transfer_syntax_is_refused(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    ds = ct_instance(generate_uid(), generate_uid(), 0)
    explicit = encode(ds)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2"  # implicit VR body
    implicit = encode(ds)
    offset = dataset_offset(explicit)
    lying = tmp_path / "lying.dcm"  # meta says explicit VR, body is implicit VR
    lying.write_bytes(explicit[:offset] + implicit[dataset_offset(implicit) :])
    jpeg_claim = tmp_path / "jpeg_claim.dcm"  # meta says JPEG, pixel data is native
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.50"
    jpeg_claim.write_bytes(file_meta_bytes(ds) + explicit[offset:])
    assert send_files(gateway.port, [lying, jpeg_claim]) == [statuses.CANNOT_UNDERSTAND] * 2
    assert instance_rows(engine) == {}
    assert _spool_files(gateway) == []


def test_garbage_dataset_is_refused(gateway: RunningGateway, engine: Engine, tmp_path: Path):
    whole = encode(ct_instance(generate_uid(), generate_uid(), 0))
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(whole[: dataset_offset(whole)] + bytes(range(256)) * 8)
    assert send_files(gateway.port, [garbage]) == [statuses.CANNOT_UNDERSTAND]
    assert instance_rows(engine) == {}


def test_non_dicom_byte_stream_does_not_disturb_the_listener(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    garbage = []
    for payload in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 40, b"\x01\x00"):
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
        sock.sendall(payload)
        garbage.append(sock)
    try:  # while those connections hang open, a real sender is served
        path = write_series(tmp_path / "series", 1)[0]
        assert send_files(gateway.port, [path]) == [0]
    finally:
        for sock in garbage:
            sock.close()
    assert len(instance_rows(engine)) == 1
    assert _spool_files(gateway) == [
        gateway.settings.spool_dir / instance_rows(engine)[path_uid(path)].file_path
    ]


def test_sop_class_differing_from_request_is_refused(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    ds = ct_instance(generate_uid(), generate_uid(), 0)
    meta = file_meta_bytes(ds)  # file meta, hence the request and context, say CT
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # the dataset says MR
    mismatched = tmp_path / "mismatched.dcm"
    whole = encode(ds)
    mismatched.write_bytes(meta + whole[dataset_offset(whole) :])
    assert send_files(gateway.port, [mismatched]) == [statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS]
    assert instance_rows(engine) == {}


def test_series_claimed_by_two_studies_is_refused(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    series_uid = generate_uid()
    first = tmp_path / "first.dcm"
    first.write_bytes(encode(ct_instance(generate_uid(), series_uid, 0)))
    second = tmp_path / "second.dcm"  # same series UID, another study
    second.write_bytes(encode(ct_instance(generate_uid(), series_uid, 1)))
    assert send_files(gateway.port, [first, second]) == [0, statuses.CANNOT_UNDERSTAND]
    assert list(instance_rows(engine)) == [path_uid(first)]
    assert len(_spool_files(gateway)) == 1


def test_below_free_space_threshold_answers_out_of_resources(
    start_gateway, settings, engine: Engine, tmp_path: Path
) -> None:
    tight = settings.model_copy(
        update={"storage": settings.storage.model_copy(update={"min_free_mb": 10**9})}
    )
    gateway = start_gateway(tight)
    path = write_series(tmp_path / "series", 1)[0]
    assert send_files(gateway.port, [path]) == [statuses.OUT_OF_RESOURCES]
    assert instance_rows(engine) == {}
    assert _spool_files(gateway) == []


def test_database_failure_is_not_acknowledged(
    gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    from sqlalchemy import text

    with engine.begin() as connection:  # the index table disappears under the listener
        connection.execute(text("ALTER TABLE instances RENAME TO instances_gone"))
    path = write_series(tmp_path / "series", 1)[0]
    assert send_files(gateway.port, [path]) == [statuses.PROCESSING_FAILURE]
    # Unsure whether the commit happened, the listener keeps the file (a harmless orphan).
    assert len(_spool_files(gateway)) == 1
    with engine.begin() as connection:  # the database comes back
        connection.execute(text("ALTER TABLE instances_gone RENAME TO instances"))
    assert instance_rows(engine) == {}  # not stored: the sender saw a failure
    assert send_files(gateway.port, [path]) == [0]  # its retry stores it whole
    row = instance_rows(engine)[path_uid(path)]
    source = path.read_bytes()
    assert stored_body(gateway, row.file_path) == source[dataset_offset(source) :]
