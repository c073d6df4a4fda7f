"""C-STORE SCU: one association per batch, contexts for exactly what is sent, each status read.

Files are sent as written (pynetdicom reads the path), so the transfer syntax proposed for
each object is the one in its file; results are written Explicit VR Little Endian.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence

from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.association import Association

from gateway.delivery.config import DeliverySettings, DicomDestination
from gateway.delivery.outcome import OutgoingObject, SendOutcome, all_failed, classify_status

_MAX_CONTEXTS = 128  # PS3.8: at most 128 presentation contexts per association


def _tls_context(destination: DicomDestination) -> ssl.SSLContext | None:
    tls = destination.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    context.check_hostname = tls.check_hostname
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


class CStoreSender:
    """Sends batches to one DICOM destination."""

    def __init__(
        self, destination: DicomDestination, calling_ae_title: str, settings: DeliverySettings
    ) -> None:
        self.destination = destination
        self.calling_ae_title = destination.calling_ae_title or calling_ae_title
        self.settings = settings

    @property
    def where(self) -> str:
        d = self.destination
        return f"{d.name} ({d.ae_title}@{d.host}:{d.port})"

    def _application_entity(self, syntaxes: set[tuple[str, str]]) -> AE:
        ae = AE(ae_title=self.calling_ae_title)
        ae.acse_timeout = self.settings.connect_timeout_s
        ae.connection_timeout = self.settings.connect_timeout_s
        ae.dimse_timeout = self.settings.response_timeout_s
        ae.network_timeout = self.settings.response_timeout_s
        for sop_class, transfer_syntax in sorted(syntaxes):
            ae.add_requested_context(sop_class, transfer_syntax)
        return ae

    def send(self, objects: Sequence[OutgoingObject]) -> list[SendOutcome]:
        outcomes: dict[str, SendOutcome] = {}
        syntax_of: dict[str, tuple[str, str]] = {}
        for obj in objects:
            try:
                meta = read_file_meta_info(obj.path)
            except (OSError, ValueError) as exc:
                outcomes[obj.sop_instance_uid] = SendOutcome.permanent_failure(
                    obj.sop_instance_uid,
                    f"expected a readable result file, found {type(exc).__name__}",
                )
                continue
            syntax_of[obj.sop_instance_uid] = (
                str(meta.MediaStorageSOPClassUID),
                str(meta.TransferSyntaxUID),
            )
        sendable = [o for o in objects if o.sop_instance_uid in syntax_of]
        syntaxes = set(syntax_of.values())
        if len(syntaxes) > _MAX_CONTEXTS:
            raise ValueError(
                f"expected at most {_MAX_CONTEXTS} SOP class/transfer syntax pairs per batch, "
                f"found {len(syntaxes)}"
            )
        if sendable:
            for outcome in self._send_on_association(sendable, syntax_of, syntaxes):
                outcomes[outcome.sop_instance_uid] = outcome
        return [outcomes[o.sop_instance_uid] for o in objects]

    def _send_on_association(
        self,
        objects: list[OutgoingObject],
        syntax_of: dict[str, tuple[str, str]],
        syntaxes: set[tuple[str, str]],
    ) -> list[SendOutcome]:
        ae = self._application_entity(syntaxes)
        context = _tls_context(self.destination)
        assoc = ae.associate(
            self.destination.host,
            self.destination.port,
            ae_title=self.destination.ae_title,
            tls_args=(context, self.destination.host) if context else None,
        )
        if assoc.is_rejected:
            return self._rejected(assoc, objects)
        if not assoc.is_established:
            return all_failed(
                objects,
                f"{self.where}: no association (refused, timed out after "
                f"{self.settings.connect_timeout_s:g} s, or aborted)",
                permanent=False,
            )
        try:
            return [self._send_one(assoc, obj, syntax_of[obj.sop_instance_uid]) for obj in objects]
        finally:
            if assoc.is_established:
                assoc.release()

    def _rejected(self, assoc: Association, objects: list[OutgoingObject]) -> list[SendOutcome]:
        primitive = assoc.acceptor.primitive
        permanent = primitive is not None and primitive.result == 0x01
        reason = primitive.reason_str if primitive is not None else "unknown reason"
        kind = "permanently" if permanent else "transiently"
        return all_failed(
            objects, f"{self.where} rejected the association {kind}: {reason}", permanent=permanent
        )

    def _send_one(
        self, assoc: Association, obj: OutgoingObject, syntax: tuple[str, str]
    ) -> SendOutcome:
        uid = obj.sop_instance_uid
        sop_class, transfer_syntax = syntax
        if not assoc.is_established:
            return SendOutcome.transient(uid, f"{self.where}: association ended before sending")
        accepted = any(
            cx.abstract_syntax == sop_class and cx.transfer_syntax[0] == transfer_syntax
            for cx in assoc.accepted_contexts
        )
        if not accepted:
            return SendOutcome.permanent_failure(
                uid,
                f"{self.where} rejected the presentation context for "
                f"{UID(sop_class).name} in {UID(transfer_syntax).name}",
            )
        status = assoc.send_c_store(obj.path)
        if "Status" not in status:
            return SendOutcome.transient(
                uid,
                f"{self.where}: no C-STORE response within "
                f"{self.settings.response_timeout_s:g} s (association aborted)",
            )
        return classify_status(uid, int(status.Status), self.where)
