"""Event handlers of the Storage and Verification SCP (pynetdicom's event-handler style).

C-STORE: the dataset as received, with the file meta pynetdicom built, goes through the
transport-independent store (store_instance.py: header, durable spool file, rows, then
success; any refusal leaves nothing stored). The network thread never does anything else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from io import BytesIO
from typing import Any, cast

from pydicom.dataset import FileMetaDataset
from pynetdicom import events as evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode_file_meta
from sqlalchemy import Engine

from gateway.audit import AuditKind, audit_row, record
from gateway.dicom import fixed_encoding, statuses
from gateway.dicom.association_end import AssociationEnds
from gateway.dicom.dataset_limits import DatasetLimits
from gateway.dicom.pdata_bound import DiscardedDataset, install_on_requested
from gateway.dicom.peers import PeerPolicy
from gateway.dicom.rejection_audit import RejectionAudit
from gateway.dicom.spool import Spool
from gateway.dicom.store_instance import InstanceStore
from gateway.ingest import Sender
from gateway.patient_index import PatientIndex

LOGGER = logging.getLogger(__name__)
TRANSPORT = "C-STORE"


def file_meta_bytes(file_meta: FileMetaDataset) -> bytes:
    """Preamble, DICM prefix and file meta group: the file header written before the body."""
    return b"\x00" * 128 + b"DICM" + encode_file_meta(file_meta)


def _sender(event: evt.Event) -> Sender:
    requestor = event.assoc.requestor
    return Sender(ae_title=str(requestor.ae_title).strip(), address=str(requestor.address))


class StorageSCP:
    """Handlers bound to pynetdicom events; one instance shared by every association."""

    def __init__(
        self,
        engine: Engine,
        spool: Spool,
        peers: PeerPolicy,
        limits: DatasetLimits | None = None,
        *,
        rejections: RejectionAudit,
        patient_index: PatientIndex | None = None,
        on_stored: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.on_stored = on_stored  # (study, series, SOP instance): completion signals
        self.spool = spool
        self.peers = peers
        self.rejections = rejections
        self.limits = limits or DatasetLimits()
        self.store = InstanceStore(engine, spool, self.limits, patient_index=patient_index)
        self.association_ends = AssociationEnds(engine)  # which series a dead sender cut

    def handlers(self) -> list[tuple[evt.EventType, Any]]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            # Before the association is accepted, so before any P-DATA: see pdata_bound.py.
            (evt.EVT_REQUESTED, install_on_requested(self.limits.max_dataset_bytes)),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_C_ECHO, self.on_c_echo),
            (evt.EVT_C_STORE, self.on_c_store),
            *self.association_ends.handlers(),
        ]

    def _audit(self, *rows: dict[str, Any]) -> None:
        try:
            with self.engine.begin() as connection:
                record(connection, *rows)
        except Exception as exc:  # the audit must not take the listener down
            LOGGER.error("audit write failed: %s", type(exc).__name__)

    # Association control -------------------------------------------------------------
    def on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        if primitive is None:  # pynetdicom sets it before EVT_REQUESTED; be explicit
            return
        calling = str(primitive.calling_ae_title).strip()
        called = str(primitive.called_ae_title).strip()
        address = str(assoc.requestor.address)
        reason = self.peers.check(calling, called, address)
        if reason is None:
            return
        first = self.rejections.note(
            address, reason.name.lower(), actor=calling, detail={"called_ae": called}
        )
        if first:  # later ones within the window are counted, not logged one by one
            LOGGER.warning(
                "rejecting association from %s calling %r called %r: %s",
                address,
                calling,
                called,
                reason.name,
            )
        assoc.acse.send_reject(*reason.value)
        assoc.kill()  # as pynetdicom does after its own rejections: waits for the RJ to go

    def on_tls_failure(self, address: str, reason: str) -> None:
        """A TLS handshake failed (no or untrusted client certificate, plain DICOM, ...)."""
        if self.rejections.note(
            address,
            "tls_handshake_failed",
            detail={"tls_error": reason[:200]},
            variant=reason[:200],
        ):
            LOGGER.warning("TLS handshake from %s failed: %s", address, reason)

    def on_connection_refused(self, address: str, reason: str, message: str) -> None:
        """A connection limit or a PDU limit closed a connection before or during its
        association (gateway/dicom/connection_guard.py, pdu_guard.py)."""
        if self.rejections.note(address, reason, detail={"message": message[:200]}):
            LOGGER.warning("connection from %s closed: %s", address, message)

    def on_accepted(self, event: evt.Event) -> None:
        sender = _sender(event)
        self._audit(
            audit_row(
                AuditKind.ASSOCIATION_ACCEPTED,
                actor=sender.ae_title,
                source_address=sender.address,
                detail={"contexts": len(event.assoc.accepted_contexts)},
            )
        )

    # DIMSE services ------------------------------------------------------------------
    def on_c_echo(self, event: evt.Event) -> int:
        return statuses.SUCCESS

    def on_c_store(self, event: evt.Event) -> int:
        sender = _sender(event)
        request = cast(C_STORE, event.request)
        try:
            return self._receive(event, sender, request)
        except Exception as exc:
            # Whatever went wrong, one line, an audit event and a status: never pynetdicom's
            # generic 0xC211 with a traceback. The sender may retry (0x0110).
            return self._refuse(
                sender,
                statuses.PROCESSING_FAILURE,
                f"unexpected {type(exc).__name__} while receiving",
                request,
            )

    def _receive(self, event: evt.Event, sender: Sender, request: C_STORE) -> int:
        dataset = request.DataSet
        if isinstance(dataset, DiscardedDataset):  # grew past dicom.max_dataset_mb
            return self._refuse(sender, statuses.OUT_OF_RESOURCES, dataset.refusal(), request)
        meta = fixed_encoding.file_header(
            str(request.AffectedSOPClassUID or ""),
            str(request.AffectedSOPInstanceUID or ""),
            str(event.context.transfer_syntax),
        )
        outcome = self.store.receive(
            sender,
            meta if meta is not None else file_meta_bytes(event.file_meta),
            cast(BytesIO, dataset).getbuffer(),
            str(event.context.transfer_syntax),
            expected_sop_class_uid=str(request.AffectedSOPClassUID or "") or None,
            announced_sop_instance_uid=str(request.AffectedSOPInstanceUID or "") or None,
            transport=TRANSPORT,
        )
        if outcome.stored and outcome.header is not None:
            header = outcome.header
            self.association_ends.stored(event.assoc, sender, header.series_instance_uid)
            if self.on_stored is not None:
                self.on_stored(
                    header.study_instance_uid, header.series_instance_uid, header.sop_instance_uid
                )
        return outcome.status

    def _refuse(self, sender: Sender, status: int, reason: str, request: Any) -> int:
        uid = str(request.AffectedSOPInstanceUID or "") or None
        return self.store.refuse(sender, status, reason, uid, TRANSPORT).status
