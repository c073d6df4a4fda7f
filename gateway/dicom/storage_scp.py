"""Event handlers of the Storage and Verification SCP (pynetdicom's event-handler style).

C-STORE: parse the header (never the pixels), write the bytes as received to the spool
durably, commit the rows, and only then answer success. Every other path answers a failure
status and leaves no stored instance behind. The network thread never does anything else.
"""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Any, cast

from pydicom.dataset import FileMetaDataset
from pynetdicom import events as evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode_file_meta
from sqlalchemy import Engine

from gateway.audit import AuditKind, Outcome, audit_row, record
from gateway.dicom import statuses
from gateway.dicom.association_end import AssociationEnds
from gateway.dicom.dataset_limits import DatasetLimits, DatasetTooLarge
from gateway.dicom.header import InstanceHeader, UnreadableDataset, read_header
from gateway.dicom.pdata_bound import DiscardedDataset, install_on_requested
from gateway.dicom.peers import PeerPolicy
from gateway.dicom.rejection_audit import RejectionAudit
from gateway.dicom.spool import Spool, SpooledFile, SpoolFull
from gateway.ingest import HierarchyConflict, InstanceIndex, Receipt, Sender

LOGGER = logging.getLogger(__name__)


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
    ) -> None:
        self.engine = engine
        self.spool = spool
        self.peers = peers
        self.rejections = rejections
        self.limits = limits or DatasetLimits()
        self.index = InstanceIndex(engine)
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
        try:
            body = cast(BytesIO, dataset).getbuffer()
            header = read_header(body, str(event.context.transfer_syntax), self.limits)
            self._check_matches_request(header, request)
        except UnreadableDataset as exc:
            return self._refuse(sender, statuses.CANNOT_UNDERSTAND, str(exc), request)
        except DatasetTooLarge as exc:
            return self._refuse(sender, statuses.OUT_OF_RESOURCES, str(exc), request)
        except RecursionError:  # defensive: the structure walk bounds nesting before pydicom
            return self._refuse(
                sender, statuses.CANNOT_UNDERSTAND, "sequences nested too deep to parse", request
            )
        except _DoesNotMatch as exc:
            return self._refuse(
                sender, statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS, str(exc), request
            )
        status = self._store(sender, header, file_meta_bytes(event.file_meta), body, request)
        if status == statuses.SUCCESS:
            self.association_ends.stored(event.assoc, sender, header.series_instance_uid)
        return status

    def _store(
        self,
        sender: Sender,
        header: InstanceHeader,
        meta: bytes,
        body: memoryview,
        request: Any,
    ) -> int:
        # No look-up first: the rare duplicate costs a discarded file, every other instance
        # saves a database round trip. The unique SOP Instance UID decides in the commit.
        try:
            spooled = self.spool.write(
                header.study_instance_uid,
                header.series_instance_uid,
                header.sop_instance_uid,
                (meta, body),
            )
        except SpoolFull as exc:
            return self._refuse(sender, statuses.OUT_OF_RESOURCES, str(exc), request)
        except Exception as exc:
            LOGGER.exception("spool write failed")
            return self._refuse(
                sender,
                statuses.OUT_OF_RESOURCES,
                f"spool write failed: {type(exc).__name__}",
                request,
            )
        try:
            receipt = self.index.record_instance(header, spooled, sender)
        except HierarchyConflict as exc:
            self.spool.discard(spooled.relative_path)
            return self._refuse(sender, statuses.CANNOT_UNDERSTAND, str(exc), request)
        except Exception as exc:
            # Most likely not committed: the sender will retry. Remove the file only once
            # the index is known not to name it (a commit may succeed and still raise).
            LOGGER.error("index commit failed: %s", type(exc).__name__)
            self._discard_unless_indexed(header, spooled)
            return self._refuse(
                sender,
                statuses.PROCESSING_FAILURE,
                f"database error: {type(exc).__name__}",
                request,
            )
        if receipt is Receipt.DUPLICATE:
            self._keep_one_copy(header, spooled)
        return statuses.SUCCESS

    def _discard_unless_indexed(self, header: InstanceHeader, spooled: SpooledFile) -> None:
        try:
            if self.index.stored_file(header.sop_instance_uid) != spooled.relative_path:
                self.spool.discard(spooled.relative_path)
        except Exception as exc:  # database still unreachable: an orphan file is harmless
            LOGGER.error("kept %s, index unreadable: %s", spooled.relative_path, type(exc).__name__)

    def _keep_one_copy(self, header: InstanceHeader, spooled: SpooledFile) -> None:
        """A duplicate: drop our copy, unless the stored copy has gone missing."""
        stored = self.index.stored_file(header.sop_instance_uid)
        if stored == spooled.relative_path:
            return  # the stored file had gone and ours took its name: it is whole again
        if stored is not None and self.spool.path_of(stored).is_file():
            self.spool.discard(spooled.relative_path)
            return
        LOGGER.warning(
            "stored file of %s missing: replaced by the copy just received", header.sop_instance_uid
        )
        self.index.replace_missing_file(header.sop_instance_uid, spooled)

    @staticmethod
    def _check_matches_request(header: InstanceHeader, request: Any) -> None:
        # A differing Affected SOP Instance UID is tolerated (some senders take it from a
        # stale file meta); the dataset's own UID is what we index.
        affected_class = str(request.AffectedSOPClassUID or "")
        if affected_class and affected_class != header.sop_class_uid:
            raise _DoesNotMatch(
                f"expected SOP Class UID {affected_class} as in the request, "
                f"found {header.sop_class_uid} in the dataset"
            )

    def _refuse(self, sender: Sender, status: int, reason: str, request: Any) -> int:
        sop_instance_uid = str(request.AffectedSOPInstanceUID or "")[:64] or None
        LOGGER.warning("C-STORE from %s refused with 0x%04X: %s", sender.ae_title, status, reason)
        self._audit(
            audit_row(
                AuditKind.INSTANCE_REFUSED,
                Outcome.FAILURE,
                actor=sender.ae_title,
                source_address=sender.address,
                sop_instance_uid=sop_instance_uid,
                detail={"status": f"0x{status:04X}", "reason": reason},
            )
        )
        return status


class _DoesNotMatch(Exception):
    """The dataset's SOP class differs from the one the request names."""
