"""The packed file meta and C-STORE-RSP are the bytes pynetdicom's own encoders make."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import create_file_meta, encode

from gateway.dicom import statuses
from gateway.dicom.fixed_encoding import c_store_response, file_header
from gateway.dicom.storage_scp import file_meta_bytes

# Odd and even lengths (padding), the longest UID, and a short one.
UIDS = [CTImageStorage, "1.2.3", "1.2.34", generate_uid(), "1." + "2" * 62]
SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
]


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("instance_uid", UIDS)
def test_file_header_is_pynetdicoms_file_meta(instance_uid: str, syntax: str) -> None:
    expected = file_meta_bytes(
        create_file_meta(
            sop_class_uid=CTImageStorage, sop_instance_uid=instance_uid, transfer_syntax=syntax
        )
    )
    assert file_header(CTImageStorage, instance_uid, syntax) == expected


@pytest.mark.parametrize(
    "status", [statuses.SUCCESS, statuses.OUT_OF_RESOURCES, statuses.CANNOT_UNDERSTAND, 0xB000]
)
@pytest.mark.parametrize("message_id", [1, 2, 255, 65535])
@pytest.mark.parametrize("instance_uid", UIDS)
def test_c_store_response_is_pynetdicoms_command_set(
    instance_uid: str, message_id: int, status: int
) -> None:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = message_id
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = instance_uid
    primitive.Status = status
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    expected = encode(message.command_set, True, True)
    assert c_store_response(CTImageStorage, message_id, status, instance_uid) == expected


@pytest.mark.parametrize("uid", ["", "1." + "2" * 63, "1.2.é"])
def test_unusual_uids_are_left_to_pynetdicom(uid: str) -> None:
    assert file_header(CTImageStorage, uid, ExplicitVRLittleEndian) is None
    assert c_store_response(CTImageStorage, 1, statuses.SUCCESS, uid) is None
