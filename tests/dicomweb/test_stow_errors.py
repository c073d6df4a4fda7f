"""STOW-RS answers each failure as PS3.18 10.5.3 and Orthanc's DICOMweb tests expect (HTTP
200 all stored, 202 some, 409 none; FailureReason per instance), stores nothing it refused,
and audits each refusal like a C-STORE's."""

from __future__ import annotations

import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
import requests
from pydicom.uid import CTImageStorage, MRImageStorage, generate_uid

from gateway.dicom import statuses
from tests.dicom_samples import ct_instance
from tests.dicomweb.server import WebServer
from tests.dicomweb.stow_helpers import (
    audit_rows,
    failures,
    file_bytes,
    referenced,
    request_events,
    spool_files,
    staging_files,
    stored_count,
    stow,
)


def _ct(study: str | None = None, **kwargs: object) -> tuple[str, bytes]:
    ds = ct_instance(study or generate_uid(), generate_uid(), 0, rows=8, columns=8, **kwargs)  # type: ignore[arg-type]
    return str(ds.SOPInstanceUID), file_bytes(ds)


def test_all_stored_answers_200_with_retrieve_urls(web: WebServer) -> None:
    secret = web.token(
        "MODALITY",
    )
    study = generate_uid()
    (uid1, part1), (uid2, part2) = _ct(study), _ct(study)
    reply = stow(web, [part1, part2], secret, study=study)
    assert reply.status == 200, reply.text
    assert referenced(reply.dataset) == [uid1, uid2]
    assert reply.dataset.RetrieveURL.endswith(f"/dicomweb/studies/{study}")
    assert "FailedSOPSequence" not in reply.dataset
    assert stored_count(web) == 2
    again = stow(web, [part1], secret)  # a duplicate is stored once, answered as stored
    assert again.status == 200 and stored_count(web) == 2
    assert staging_files(web) == []


def test_not_dicom_is_0xC210_and_nothing_is_stored(web: WebServer) -> None:
    secret = web.token("MODALITY")
    reply = stow(web, [b"this is not a DICOM file" * 20], secret)
    assert reply.status == 409
    assert failures(reply.dataset) == [("", statuses.CANNOT_UNDERSTAND)]
    uid, whole = _ct()
    truncated = whole[: len(whole) - 100]  # the pixel data cut short
    reply = stow(web, [truncated], secret)
    assert reply.status == 409
    assert failures(reply.dataset) == [(uid, statuses.CANNOT_UNDERSTAND)]
    assert stored_count(web) == 0 and spool_files(web) == [] and staging_files(web) == []
    refused = audit_rows(web, "instance.refused")
    assert [r.detail["transport"] for r in refused] == ["STOW-RS", "STOW-RS"]
    assert [r.actor for r in refused] == ["MODALITY", "MODALITY"]


def test_sop_class_differing_from_the_file_meta_is_0xA900(web: WebServer) -> None:
    secret = web.token("MODALITY")
    ds = ct_instance(generate_uid(), generate_uid(), 0, rows=8, columns=8)
    data = file_bytes(ds)
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")  # after (0002,0000)
    # the file meta announces MR (same length UID); the dataset says CT
    data = (
        data[:meta_end].replace(CTImageStorage.encode(), MRImageStorage.encode()) + data[meta_end:]
    )
    reply = stow(web, [data], secret)
    assert reply.status == 409
    assert failures(reply.dataset) == [
        (str(ds.SOPInstanceUID), statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS)
    ]
    assert stored_count(web) == 0


def test_below_the_free_space_threshold_is_0xA700(
    start_web: Callable[..., WebServer],
) -> None:
    web = start_web(storage={"min_free_mb": 10**9})  # a petabyte free: never
    uid, part = _ct()
    reply = stow(web, [part], web.token("MODALITY"))
    assert reply.status == 409
    assert failures(reply.dataset) == [(uid, statuses.OUT_OF_RESOURCES)]
    assert stored_count(web) == 0 and spool_files(web) == [] and staging_files(web) == []


def test_an_instance_outside_the_study_in_the_url_is_0x0110_and_409(web: WebServer) -> None:
    secret = web.token("MODALITY")
    study, other = generate_uid(), generate_uid()
    (inside_uid, inside), (outside_uid, outside) = _ct(study), _ct(other)
    reply = stow(web, [outside], secret, study=study)
    assert reply.status == 409
    assert failures(reply.dataset) == [(outside_uid, statuses.PROCESSING_FAILURE)]
    assert stored_count(web) == 0
    # one of each: 202, the one inside stored
    reply = stow(web, [inside, outside], secret, study=study)
    assert reply.status == 202
    assert referenced(reply.dataset) == [inside_uid]
    assert failures(reply.dataset) == [(outside_uid, statuses.PROCESSING_FAILURE)]
    assert stored_count(web) == 1


def test_the_answer_comes_as_xml_on_request(web: WebServer) -> None:
    secret = web.token("MODALITY")
    (uid, good) = _ct()
    reply = stow(web, [good, b"not dicom" * 10], secret, accept="application/dicom+xml")
    assert reply.status == 202
    assert reply.headers["Content-Type"] == "application/dicom+xml"
    ns = {"d": "http://dicom.nema.org/PS3.19/models/NativeDICOM"}
    root = ElementTree.fromstring(reply.text.encode())
    reasons = root.findall(
        "d:DicomAttribute[@tag='00081198']/d:Item/d:DicomAttribute[@tag='00081197']/d:Value", ns
    )
    assert [r.text for r in reasons] == [str(statuses.CANNOT_UNDERSTAND)]
    stored = root.findall(
        "d:DicomAttribute[@tag='00081199']/d:Item/d:DicomAttribute[@tag='00081155']/d:Value", ns
    )
    assert [s.text for s in stored] == [uid]


def test_other_media_types_and_broken_bodies_are_refused(web: WebServer) -> None:
    secret = web.token("MODALITY")
    _, part = _ct()
    reply = stow(web, [part], secret, content_type="application/dicom")
    assert reply.status == 415
    reply = stow(
        web,
        [part],
        secret,
        content_type='multipart/related; type="application/dicom+json"; boundary=b',
    )
    assert reply.status == 415
    cut = requests.post(
        f"{web.dicomweb}/studies",
        data=b"--b\r\nContent-Type: application/dicom\r\n\r\n" + part,  # no closing boundary
        headers={
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
            "Authorization": f"Bearer {secret}",
        },
        timeout=30,
    )
    assert cut.status_code == 400 and "boundary" in cut.text
    assert stored_count(web) == 0 and staging_files(web) == []


def test_a_content_length_over_the_limit_is_refused_before_the_body_is_read(
    start_web: Callable[..., WebServer],
) -> None:
    web = start_web(dicomweb={"max_stow_mb": 1})
    secret = web.token("MODALITY")
    with socket.create_connection(("127.0.0.1", web.port), timeout=10) as sock:
        sock.sendall(
            (
                "POST /dicomweb/studies HTTP/1.1\r\n"
                f"Host: 127.0.0.1:{web.port}\r\n"
                f"Authorization: Bearer {secret}\r\n"
                'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n'
                f"Content-Length: {2 * 1024**3}\r\n\r\n"
            ).encode()
        )
        started = time.monotonic()
        answer = sock.recv(65536)  # not a byte of the 2 GB sent
        # A client that gives up resets the connection: the refusal is audited all the same.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert time.monotonic() - started < 5
    [event] = request_events(web, 413)
    assert event.actor == "MODALITY" and event.outcome == "failure"


@pytest.mark.parametrize("limit_mb", [1])
def test_a_chunked_body_is_cut_at_the_limit_and_nothing_is_stored(
    start_web: Callable[..., WebServer], limit_mb: int
) -> None:
    web = start_web(dicomweb={"max_stow_mb": limit_mb})
    secret = web.token("MODALITY")
    _, part = _ct()

    def body() -> object:
        yield b"--b\r\nContent-Type: application/dicom\r\n\r\n" + part + b"\r\n"
        for _ in range(4):  # a second part of 4 MB: over the 1 MB limit
            yield (
                b"--b\r\nContent-Type: application/dicom\r\n\r\n" if _ == 0 else b""
            ) + b"\0" * 1024**2

    try:
        reply = requests.post(
            f"{web.dicomweb}/studies",
            data=body(),
            headers={
                "Content-Type": 'multipart/related; type="application/dicom"; boundary=b',
                "Authorization": f"Bearer {secret}",
            },
            timeout=30,
        )
        assert reply.status_code == 413
    except requests.ConnectionError:
        pass  # the server closed while the client still sent: also a refusal
    time.sleep(0.5)
    assert stored_count(web) == 0  # the first part, whole, was not stored either
    assert spool_files(web) == [] and staging_files(web) == []
    [event] = request_events(web, 413)
    assert event.detail["bytes"] == limit_mb * 1024**2 + 1


def test_a_part_over_the_dataset_limit_is_0xA700_and_the_others_are_stored(
    start_web: Callable[..., WebServer],
) -> None:
    web = start_web(dicom={"max_dataset_mb": 1})  # as a C-STORE dataset is bound
    big = ct_instance(generate_uid(), generate_uid(), 0, rows=1024, columns=1024)  # 2 MiB
    (small_uid, small) = _ct()
    reply = stow(web, [file_bytes(big), small], web.token("MODALITY"))
    assert reply.status == 202, reply.text
    assert failures(reply.dataset) == [(str(big.SOPInstanceUID), statuses.OUT_OF_RESOURCES)]
    assert referenced(reply.dataset) == [small_uid]
    assert stored_count(web) == 1 and len(spool_files(web)) == 1 and staging_files(web) == []
    [refused] = audit_rows(web, "instance.refused")
    assert refused.detail is not None and "dicom.max_dataset_mb" in refused.detail["reason"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB file system (tmpfs) for the data directory: writes past it fail ENOSPC."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"expected to mount a tmpfs (root), found: {mounted.stderr.decode()[:200]}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_disk_is_0xA700_and_nothing_of_the_part_is_left(
    start_web: Callable[..., WebServer], small_disk: Path
) -> None:
    web = start_web(data_dir=small_disk / "data")  # min_free_mb 0: only the disk stops it
    big = ct_instance(generate_uid(), generate_uid(), 0, rows=2048, columns=2048)  # 8 MiB
    (small_uid, small) = _ct()
    reply = stow(web, [small, file_bytes(big)], web.token("MODALITY"))
    assert reply.status == 202, reply.text
    assert failures(reply.dataset) == [(str(big.SOPInstanceUID), statuses.OUT_OF_RESOURCES)]
    assert referenced(reply.dataset) == [small_uid]
    assert stored_count(web) == 1 and len(spool_files(web)) == 1 and staging_files(web) == []
    [refused] = audit_rows(web, "instance.refused")
    assert refused.detail is not None and "disk full" in refused.detail["reason"], refused.detail
    assert shutil.disk_usage(small_disk).free > 3 * 1024**2  # the refused part was removed
