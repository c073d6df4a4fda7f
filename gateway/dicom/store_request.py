"""Receive C-STORE requests without decoding their command set through pydicom.

pynetdicom decodes every request's command set into a pydicom dataset (`decode`), then
copies each element into the primitive through setters that validate each UID twice with
regular expressions (`DIMSEMessage.message_to_primitive`): about 0.3 ms per instance in the
DUL thread (bench/results/ingest_profile.md), a tenth of a small instance's CPU. A C-STORE-RQ
command set is a short, fixed list of group 0000 elements in Implicit VR Little Endian
(PS3.7 9.3.1.1), so it is read here straight from the bytes. Anything else (another
command, an element we do not expect, a UID that is not plainly conformant, a command set
in several fragments, pynetdicom's chunked-dataset mode) takes pynetdicom's path, which
then answers or aborts as it always has.
"""

from __future__ import annotations

import re
import struct
from io import BytesIO
from typing import Any

from pydicom import Dataset
from pydicom.uid import UID
from pynetdicom import _config
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA

_LAST_COMMAND_FRAGMENT = 0b11  # message control header bits: command, last fragment
_C_STORE_RQ = 0x0001
_NO_DATA_SET = 0x0101
# group 0000 element -> name; any other element sends the request down pynetdicom's path
_GROUP_LENGTH = 0x0000
_AFFECTED_SOP_CLASS_UID = 0x0002
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_PRIORITY = 0x0700
_COMMAND_DATA_SET_TYPE = 0x0800
_AFFECTED_SOP_INSTANCE_UID = 0x1000
_MOVE_ORIGINATOR_AE_TITLE = 0x1030
_MOVE_ORIGINATOR_MESSAGE_ID = 0x1031
_US = {_COMMAND_FIELD, _MESSAGE_ID, _PRIORITY, _COMMAND_DATA_SET_TYPE, _MOVE_ORIGINATOR_MESSAGE_ID}
_KNOWN = _US | {
    _GROUP_LENGTH,
    _AFFECTED_SOP_CLASS_UID,
    _AFFECTED_SOP_INSTANCE_UID,
    _MOVE_ORIGINATOR_AE_TITLE,
}
_REQUIRED = (_AFFECTED_SOP_CLASS_UID, _MESSAGE_ID, _PRIORITY, _AFFECTED_SOP_INSTANCE_UID)
# PS3.5 9.1: components of digits without leading zeros, at most 64 characters
_CONFORMANT_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_ELEMENT_HEADER = struct.Struct("<HHI")


def command_elements(command_set: bytes) -> dict[int, bytes] | None:
    """The group 0000 elements of an Implicit VR Little Endian command set by element
    number, or None if it holds anything but a C-STORE-RQ's usual elements."""
    elements: dict[int, bytes] = {}
    offset, end = 0, len(command_set)
    while offset < end:
        if end - offset < _ELEMENT_HEADER.size:
            return None
        group, element, length = _ELEMENT_HEADER.unpack_from(command_set, offset)
        offset += _ELEMENT_HEADER.size
        if group != 0 or element not in _KNOWN or length > end - offset or element in elements:
            return None
        elements[element] = command_set[offset : offset + length]
        offset += length
    return elements


def _us(value: bytes) -> int | None:
    return int.from_bytes(value, "little") if len(value) == 2 else None


def _uid(value: bytes) -> UID | None:
    text = value.rstrip(b"\x00 ")
    if not text or len(text) > 64 or not text.isascii():
        return None
    uid = text.decode("ascii")
    return UID(uid) if _CONFORMANT_UID.fullmatch(uid) else None


class FastCStoreRequest(C_STORE_RQ):
    """A C-STORE-RQ whose command set was read from its bytes: the data set fragments are
    collected by pynetdicom's own `decode_msg`, the primitive is built here."""

    def __init__(self, encoded: bytes, values: dict[int, Any], context_id: int) -> None:
        # Not DIMSEMessage.__init__: it fills an empty command-set dataset element by
        # element (the cost this class avoids) and looks its keywords up by class name.
        self.context_id = context_id
        self.encoded_command_set = BytesIO(encoded)
        self.data_set: BytesIO | None = BytesIO()
        self._data_set_path = None
        self._data_set_file = None
        self._values = values
        self._command_set: Dataset | None = None

    @property
    def command_set(self) -> Dataset:
        """pynetdicom's decoding, made only if someone asks (an EVT_DIMSE_RECV handler)."""
        if self._command_set is None:
            self.encoded_command_set.seek(0)
            self._command_set = decode(self.encoded_command_set, True, True)
        return self._command_set

    @command_set.setter
    def command_set(self, value: Dataset) -> None:
        self._command_set = value

    def message_to_primitive(self) -> C_STORE:
        values = self._values
        primitive = C_STORE()
        primitive.MessageID = values[_MESSAGE_ID]
        primitive.Priority = values[_PRIORITY]
        # conformant UIDs (checked in `store_request`): what pynetdicom's setter would keep
        primitive._affected_sop_class_uid = values[_AFFECTED_SOP_CLASS_UID]
        primitive._affected_sop_instance_uid = values[_AFFECTED_SOP_INSTANCE_UID]
        if _MOVE_ORIGINATOR_AE_TITLE in values:
            primitive.MoveOriginatorApplicationEntityTitle = values[_MOVE_ORIGINATOR_AE_TITLE]
        if _MOVE_ORIGINATOR_MESSAGE_ID in values:
            primitive.MoveOriginatorMessageID = values[_MOVE_ORIGINATOR_MESSAGE_ID]
        primitive.DataSet = self.data_set
        primitive._context_id = self.context_id
        primitive._dataset_path = None
        primitive._dataset_file = None
        return primitive


def store_request(command_set: bytes, context_id: int) -> FastCStoreRequest | None:
    """The message for a C-STORE-RQ command set with a data set to follow, or None."""
    elements = command_elements(command_set)
    if elements is None or any(e not in elements for e in _REQUIRED):
        return None
    if elements.get(_COMMAND_FIELD) is None or _us(elements[_COMMAND_FIELD]) != _C_STORE_RQ:
        return None
    data_set_type = elements.get(_COMMAND_DATA_SET_TYPE)
    if data_set_type is None or _us(data_set_type) in (None, _NO_DATA_SET):
        return None
    values: dict[int, Any] = {}
    for element in (_MESSAGE_ID, _PRIORITY, _MOVE_ORIGINATOR_MESSAGE_ID):
        if element in elements:
            if (number := _us(elements[element])) is None:
                return None
            values[element] = number
    if values[_PRIORITY] not in (0, 1, 2):
        return None
    for element in (_AFFECTED_SOP_CLASS_UID, _AFFECTED_SOP_INSTANCE_UID):
        if (uid := _uid(elements[element])) is None:
            return None
        values[element] = uid
    if _MOVE_ORIGINATOR_AE_TITLE in elements:
        title = elements[_MOVE_ORIGINATOR_AE_TITLE]
        if not title.isascii():
            return None
        values[_MOVE_ORIGINATOR_AE_TITLE] = title.decode("ascii").strip()
    return FastCStoreRequest(command_set, values, context_id)


def _not_started(message: DIMSEMessage | None) -> bool:
    """No message yet, or the empty one gateway/dicom/pdata_bound.py puts in place before
    the first P-DATA of each message (so that it can count its dataset bytes)."""
    return message is None or (
        type(message) is DIMSEMessage
        and message.context_id is None
        and message.encoded_command_set.tell() == 0
    )


def install(assoc: Any) -> None:
    """Read this association's C-STORE-RQ command sets from their bytes (see above)."""
    dimse = assoc.dimse
    receive_primitive = dimse.receive_primitive

    def receive(primitive: P_DATA) -> None:
        pdvs = primitive.presentation_data_value_list
        placeholder = dimse.message
        if _not_started(placeholder) and pdvs and not _config.STORE_RECV_CHUNKED_DATASET:
            context_id, data = pdvs[0]
            if data and data[0] & _LAST_COMMAND_FRAGMENT == _LAST_COMMAND_FRAGMENT:
                message = store_request(bytes(data[1:]), context_id)
                if message is not None:
                    if placeholder is not None:  # keeps the size bound's buffer
                        message.data_set = placeholder.data_set
                    dimse.message = message
                    if len(pdvs) == 1:
                        return  # the data set comes in the next P-DATA
                    rest = P_DATA()
                    rest.presentation_data_value_list = pdvs[1:]
                    primitive = rest
        receive_primitive(primitive)

    dimse.receive_primitive = receive
