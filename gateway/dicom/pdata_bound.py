"""A bound on the dataset bytes one C-STORE may accumulate in memory while its P-DATA arrive.

pynetdicom writes every dataset fragment of a DIMSE message into a BytesIO
(`DIMSEMessage.decode_msg`) and fires EVT_C_STORE only once the last one is in, so without
a bound a peer can make an association hold any number of bytes. We wrap the association's
`DIMSEServiceProvider.receive_primitive` (the one place every P-DATA passes, in the DUL
thread) and count dataset fragments per message. Past the bound the message's buffer is
swapped for a `DiscardedDataset`, which counts and drops the rest; the message still
completes, so the C-STORE handler answers 0xA700 and the association carries on.

pynetdicom's own alternative, `_config.STORE_RECV_CHUNKED_DATASET`, is process-wide, writes
to a temporary file outside the spool with a flush per fragment and a file meta built from
the request, not the dataset: not what we store, and slower for small instances.
"""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from typing import Any

from pynetdicom.association import Association
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.pdu_primitives import P_DATA


class DiscardedDataset(BytesIO):
    """Stands in for a dataset that grew past the bound: counts bytes, keeps none."""

    def __init__(self, received: int, limit: int) -> None:
        super().__init__()
        self.received = received  # dataset bytes of the message, kept or not
        self.limit = limit

    def write(self, data: Any) -> int:
        size = len(data)
        self.received += size
        return size

    def refusal(self) -> str:
        return (
            f"expected a dataset of at most {self.limit} bytes, found {self.received}: "
            "discarded as it arrived"
        )


class DatasetSizeBound:
    """Installed on one association: its P-DATA go through `receive_primitive` here."""

    def __init__(self, assoc: Association, max_bytes: int) -> None:
        self._dimse = assoc.dimse
        self._receive = assoc.dimse.receive_primitive
        self._max_bytes = max_bytes
        self._received = 0  # dataset bytes of the message being received

    @classmethod
    def install(cls, assoc: Association, max_bytes: int) -> DatasetSizeBound:
        bound = cls(assoc, max_bytes)
        assoc.dimse.receive_primitive = bound.receive_primitive  # type: ignore[method-assign]
        return bound

    def receive_primitive(self, primitive: P_DATA) -> None:
        message = self._dimse.message
        if message is None:  # a new DIMSE message starts (as pynetdicom would create it)
            message = self._dimse.message = DIMSEMessage()
            self._received = 0
        arriving = sum(
            len(fragment) - 1
            for _context_id, fragment in primitive.presentation_data_value_list
            if not fragment[0] & 1  # message control header bit 0 clear: dataset, not command
        )
        self._received += arriving
        if self._received > self._max_bytes and not isinstance(message.data_set, DiscardedDataset):
            # Drop what was buffered; the fragments still to come are counted, not kept.
            message.data_set = DiscardedDataset(self._received - arriving, self._max_bytes)
        self._receive(primitive)


def install_on_requested(max_bytes: int) -> Callable[[Any], None]:
    """An EVT_REQUESTED handler: it runs before the A-ASSOCIATE-AC, so before any P-DATA."""

    def _install(event: Any) -> None:
        DatasetSizeBound.install(event.assoc, max_bytes)

    return _install
