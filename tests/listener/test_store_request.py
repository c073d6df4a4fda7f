"""C-STORE-RQ command sets read from their bytes (gateway/dicom/store_request.py) give the
primitive pynetdicom's own decoding gives, and anything unusual is left to pynetdicom."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import decode, encode
from sqlalchemy import Engine

from gateway.dicom.store_request import FastCStoreRequest, store_request
from gateway.settings import GatewaySettings
from tests.conftest import RunningGateway
from tests.db_queries import instance_rows
from tests.dicom_samples import write_series
from tests.scu import send_files

CT = "1.2.840.10008.5.1.4.1.1.2"


def _request(**fields: Any) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageID = fields.get("message_id", 7)
    primitive.AffectedSOPClassUID = fields.get("sop_class", CT)
    primitive.AffectedSOPInstanceUID = fields.get("sop_instance", generate_uid())
    primitive.Priority = fields.get("priority", 2)
    if "move_ae" in fields:
        primitive.MoveOriginatorApplicationEntityTitle = fields["move_ae"]
        primitive.MoveOriginatorMessageID = fields["move_id"]
    primitive.DataSet = BytesIO(b"\x08\x00\x16\x00")
    return primitive


def _encoded(primitive: Any) -> bytes:
    message = C_STORE_RQ() if isinstance(primitive, C_STORE) else C_ECHO_RQ()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True))


def _pynetdicom(command_set: bytes, data: bytes, context_id: int) -> C_STORE:
    message = C_STORE_RQ()
    message.command_set = decode(BytesIO(command_set), True, True)
    message.data_set = BytesIO(data)
    message.context_id = context_id
    primitive: C_STORE = message.message_to_primitive()
    return primitive


FIELDS = (
    "MessageID",
    "AffectedSOPClassUID",
    "AffectedSOPInstanceUID",
    "Priority",
    "MoveOriginatorApplicationEntityTitle",
    "MoveOriginatorMessageID",
)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"message_id": 65535, "priority": 1},
        {"priority": 0, "move_ae": "MOVE_SCU", "move_id": 3},
        {"sop_instance": "1.2.3.4.5.67890.1"},  # odd length: padded with NUL
    ],
)
def test_the_primitive_is_pynetdicoms(fields: dict[str, Any]) -> None:
    command_set = _encoded(_request(**fields))
    message = store_request(command_set, context_id=5)
    assert message is not None
    message.data_set = BytesIO(b"dataset bytes")
    fast = message.message_to_primitive()
    slow = _pynetdicom(command_set, b"dataset bytes", 5)
    for name in FIELDS:
        assert getattr(fast, name) == getattr(slow, name), name
        assert type(getattr(fast, name)) is type(getattr(slow, name)), name
    assert fast._context_id == slow._context_id == 5
    assert fast.DataSet.getvalue() == slow.DataSet.getvalue() == b"dataset bytes"
    # and whoever asks for the message's command set gets pynetdicom's decoding
    assert message.command_set == decode(BytesIO(command_set), True, True)


def _with_element(command_set: bytes, element: bytes) -> bytes:
    return command_set + element


def test_anything_unusual_is_left_to_pynetdicom() -> None:
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    assert store_request(_encoded(echo), 1) is None  # not a C-STORE-RQ
    good = _encoded(_request())
    assert store_request(good, 1) is not None
    # an element a C-STORE-RQ does not carry: (0000,0902) Error Comment
    assert store_request(good + b"\x00\x00\x02\x09\x02\x00\x00\x00ab", 1) is None
    assert store_request(good[:-3], 1) is None  # truncated
    assert store_request(_encoded(_request(sop_instance="1.2.03.4")), 1) is None
    assert store_request(_encoded(_request(sop_class="1.2.840.10008.5.1.4.1.1.2 ")), 1) is not None
    no_data = good.replace(
        b"\x00\x00\x00\x08\x02\x00\x00\x00\x01\x00", b"\x00\x00\x00\x08\x02\x00\x00\x00\x01\x01"
    )
    assert no_data != good and store_request(no_data, 1) is None  # no data set follows


def test_the_listener_reads_store_requests_this_way(
    settings: GatewaySettings,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Behind the dataset size bound (which puts its own empty message in place before each
    P-DATA), every C-STORE-RQ of a real association takes this path and is stored."""
    built: list[str] = []
    real = FastCStoreRequest.message_to_primitive

    def counted(self: FastCStoreRequest) -> C_STORE:
        primitive = real(self)
        built.append(str(primitive.AffectedSOPInstanceUID))
        return primitive

    monkeypatch.setattr(FastCStoreRequest, "message_to_primitive", counted)
    gateway = start_gateway(settings)
    paths = write_series(tmp_path / "series", 5)
    assert send_files(gateway.port, paths) == [0] * 5
    sent = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]
    assert built == sent
    assert len(instance_rows(engine)) == 5
