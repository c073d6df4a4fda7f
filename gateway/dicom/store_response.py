"""Send C-STORE responses without building them through pydicom.

pynetdicom turns every response primitive into a DIMSEMessage, a pydicom command-set
dataset and its encoding (`DIMSEServiceProvider.send_msg`): for a status-only C-STORE-RSP
that is more CPU than storing a small instance's rows. This wraps the association's
`send_msg`: a C-STORE-RSP without error comment or offending element, with no
EVT_DIMSE_SENT handler bound, goes out as one P-DATA with the command set packed by
fixed_encoding.py (the same bytes); every other message takes pynetdicom's path.
"""

from __future__ import annotations

from typing import Any

from pynetdicom import evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from gateway.dicom.fixed_encoding import c_store_response

_LAST_COMMAND_FRAGMENT = b"\x03"  # message control header: command, last fragment
_PDV_OVERHEAD = 6  # pynetdicom fragments command sets at (maximum PDU length - 6)


def install(assoc: Any) -> None:
    dimse = assoc.dimse
    send_msg = dimse.send_msg

    def send_response(primitive: Any, context_id: int) -> None:
        command = _encoded_c_store_response(assoc, primitive)
        if command is None or 0 < dimse.maximum_pdu_size < len(command) + _PDV_OVERHEAD:
            send_msg(primitive, context_id)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, _LAST_COMMAND_FRAGMENT + command))
        dimse.dul.send_pdu(pdata)

    dimse.send_msg = send_response


def _encoded_c_store_response(assoc: Any, primitive: Any) -> bytes | None:
    if (
        not isinstance(primitive, C_STORE)
        or primitive.MessageIDBeingRespondedTo is None
        or primitive.Status is None
        or primitive.ErrorComment is not None
        or primitive.OffendingElement is not None
        or assoc.get_handlers(evt.EVT_DIMSE_SENT)
    ):
        return None
    return c_store_response(
        str(primitive.AffectedSOPClassUID or ""),
        int(primitive.MessageIDBeingRespondedTo),
        int(primitive.Status),
        str(primitive.AffectedSOPInstanceUID or ""),
    )
