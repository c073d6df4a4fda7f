"""Assertions on stored files: the gateway keeps the dataset bytes exactly as received."""

from __future__ import annotations

import zlib
from io import BytesIO

from pydicom import dcmread
from pydicom.uid import DeflatedExplicitVRLittleEndian

from tests.integration.dicom_factory import dataset_body
from tests.integration.gateway_db import InstanceRow


def _inflate(body: bytes) -> bytes:
    return zlib.decompress(body, -zlib.MAX_WBITS)


def assert_stored_as_sent(stored: bytes, sent: bytes, row: InstanceRow) -> None:
    """`stored` (the gateway's spool file) holds exactly the dataset of `sent` (the sender's
    copy of the file): the bytes after the File Meta Information are equal (for Deflated
    Explicit VR Little Endian, equal once inflated). The file meta must name the transfer
    syntax and UIDs recorded in the row; pixel data and UIDs are also compared after
    parsing, so a failure says what differs."""
    stored_ds = dcmread(BytesIO(stored))
    sent_ds = dcmread(BytesIO(sent))
    assert stored_ds.file_meta.TransferSyntaxUID == row.transfer_syntax_uid
    assert stored_ds.file_meta.TransferSyntaxUID == sent_ds.file_meta.TransferSyntaxUID
    assert stored_ds.file_meta.MediaStorageSOPInstanceUID == row.sop_instance_uid
    assert stored_ds.file_meta.MediaStorageSOPClassUID == row.sop_class_uid
    for keyword in ("SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID"):
        assert stored_ds[keyword].value == sent_ds[keyword].value, keyword
    assert stored_ds.PixelData == sent_ds.PixelData, "pixel data differs"
    stored_body, sent_body = dataset_body(stored), dataset_body(sent)
    if row.transfer_syntax_uid == DeflatedExplicitVRLittleEndian and stored_body != sent_body:
        # A sender may deflate with other settings: then the inflated datasets must match.
        stored_body, sent_body = _inflate(stored_body), _inflate(sent_body)
    assert stored_body == sent_body, (
        f"expected the stored dataset of {row.sop_instance_uid} to equal the sent one "
        f"({len(sent_body)} bytes), found {len(stored_body)} bytes that differ"
    )
