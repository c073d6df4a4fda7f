"""The DICOM listener: a pynetdicom AE serving Verification and Storage, plain and TLS."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydicom import uid
from pynetdicom import AE, AllStoragePresentationContexts, _config
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import Engine

from gateway.audit import record
from gateway.completion.config import CompletionSettings
from gateway.completion.watch import CompletionWatch
from gateway.dicom.association_end import AssociationEnds
from gateway.dicom.connection_guard import ConnectionGuard, ConnectionLimits
from gateway.dicom.dataset_limits import DatasetLimits
from gateway.dicom.mpps import MPPS_SOP_CLASS, MppsSCP
from gateway.dicom.pdu_guard import PduLimits
from gateway.dicom.peers import PeerPolicy
from gateway.dicom.rejection_audit import RejectionAudit
from gateway.dicom.spool import Spool
from gateway.dicom.storage_commitment import STORAGE_COMMITMENT_SOP_CLASS, StorageCommitmentSCP
from gateway.dicom.storage_scp import StorageSCP
from gateway.dicom.transport import GatewayAssociationServer
from gateway.patient_index import PatientIndex
from gateway.settings import DicomSettings, GatewaySettings

LOGGER = logging.getLogger(__name__)

# What we accept, stored as received. The sender's preference order decides per context.
SUPPORTED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
    uid.DeflatedExplicitVRLittleEndian,
    uid.ExplicitVRBigEndian,
    uid.JPEGBaseline8Bit,
    uid.JPEGExtended12Bit,
    uid.JPEGLossless,
    uid.JPEGLosslessSV1,
    uid.JPEGLSLossless,
    uid.JPEGLSNearLossless,
    uid.JPEG2000Lossless,
    uid.JPEG2000,
    uid.HTJ2KLossless,
    uid.HTJ2KLosslessRPCL,
    uid.HTJ2K,
    uid.RLELossless,
)


# MPPS and Storage Commitment carry small normalized datasets: uncompressed syntaxes only.
NORMALIZED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    uid.ExplicitVRLittleEndian,
    uid.ImplicitVRLittleEndian,
)


def configure_pynetdicom_logging() -> None:
    """pynetdicom logs query identifiers and every PDU by default: PHI and cost. Turn off."""
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    dul_logger = logging.getLogger("pynetdicom.dul")
    if not any(isinstance(f, _CutPduFilter) for f in dul_logger.filters):
        dul_logger.addFilter(_CutPduFilter())


class _CutPduFilter(logging.Filter):
    """pynetdicom logs an error for every PDU that ends early: each connection our PDU guard
    cuts (already logged with the reason, audited per peer and minute) or a peer that
    vanished mid-PDU. One line per attacking connection would flood the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("The received PDU is shorter than expected")


def supported_contexts(completion: CompletionSettings | None = None) -> list[PresentationContext]:
    contexts = [build_context(Verification, list(SUPPORTED_TRANSFER_SYNTAXES))]
    if completion is not None and completion.mpps:
        contexts.append(build_context(MPPS_SOP_CLASS, list(NORMALIZED_TRANSFER_SYNTAXES)))
    if completion is not None and completion.storage_commitment:
        contexts.append(
            build_context(STORAGE_COMMITMENT_SOP_CLASS, list(NORMALIZED_TRANSFER_SYNTAXES))
        )
    contexts.extend(
        build_context(cx.abstract_syntax, list(SUPPORTED_TRANSFER_SYNTAXES))
        for cx in AllStoragePresentationContexts
        if cx.abstract_syntax is not None
    )
    return contexts


def build_ae(dicom: DicomSettings) -> AE:
    ae = AE(ae_title=dicom.ae_title)
    # pynetdicom counts every connection thread, pending ones too; ConnectionGuard enforces
    # max_associations for allowed peers, this is only a backstop.
    ae.maximum_associations = dicom.max_associations + dicom.max_pending_connections
    ae.maximum_pdu_size = dicom.max_pdu_size
    ae.acse_timeout = dicom.acse_timeout_s
    ae.dimse_timeout = dicom.dimse_timeout_s
    ae.network_timeout = dicom.network_timeout_s
    ae.require_called_aet = False  # PeerPolicy checks it, with an audit event
    ae.require_calling_aet = []
    return ae


def _write_audit(engine: Engine, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as connection:
        record(connection, *rows)


def tls_context(dicom: DicomSettings) -> ssl.SSLContext | None:
    tls = dicom.tls
    if tls.port is None or tls.cert_file is None or tls.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=tls.cert_file, keyfile=tls.key_file)
    if tls.ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=tls.ca_file)
    return context


def connection_limits(dicom: DicomSettings) -> ConnectionLimits:
    return ConnectionLimits(
        max_associations=dicom.max_associations,
        max_pending=dicom.max_pending_connections,
        max_pending_per_address=dicom.max_pending_per_address,
        max_per_address=dicom.max_connections_per_address,
    )


def pdu_limits(dicom: DicomSettings) -> PduLimits:
    return PduLimits(
        max_pdu_size=dicom.max_pdu_size,
        association_request_timeout_s=dicom.acse_timeout_s,
        pdu_timeout_s=dicom.pdu_timeout_s,
    )


@dataclass
class Listener:
    """Running servers; `stop()` closes them."""

    servers: list[GatewayAssociationServer]
    rejections: RejectionAudit | None = None
    association_ends: AssociationEnds | None = None
    threads: list[threading.Thread] = field(default_factory=list)
    by_endpoint: dict[str, GatewayAssociationServer] = field(default_factory=dict)
    stopping: threading.Event = field(default_factory=threading.Event)

    def deliver(self, endpoint: str, connection: socket.socket, peer: tuple[str, int]) -> None:
        """Serve a connection that another process accepted."""
        server = self.by_endpoint.get(endpoint)
        if server is None:
            LOGGER.error("connection for unknown endpoint %r dropped", endpoint)
            connection.close()
            return
        server.process_request(connection, peer)

    @property
    def ports(self) -> list[int]:
        return [int(server.server_address[1]) for server in self.servers]

    def stop(self, drain_timeout_s: float = 10.0) -> None:
        """Stop accepting, let running associations finish for a while, then abort them."""
        # Only established associations can be mid-transfer; a connection that never sent
        # an A-ASSOCIATE-RQ (a port probe) would otherwise hold us until the ACSE timeout.
        running = [
            assoc
            for server in self.servers
            for assoc in server.active_associations
            if assoc.is_established
        ]
        for server in self.servers:
            try:
                server.shutdown()
            finally:
                server.server_close()
        deadline = time.monotonic() + drain_timeout_s
        for assoc in running:
            assoc.join(timeout=max(0.0, deadline - time.monotonic()))
            if assoc.is_alive():
                assoc.abort()  # unacknowledged instances are resent by the sender
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=5)
        if self.rejections is not None:
            self.rejections.flush_all()
        if self.association_ends is not None:  # the aborts above mark their series
            self.association_ends.close()

    def flush_rejections(self, interval_s: float) -> None:
        """Write the aggregated rejection rows whose window has ended, until stopped."""
        while not self.stopping.wait(interval_s):
            if self.rejections is not None:
                self.rejections.flush_due()


PLAIN_ENDPOINT = "plain"
TLS_ENDPOINT = "tls"


def listener_endpoints(dicom: DicomSettings) -> dict[str, int]:
    """The ports we listen on, by name: plain DICOM, and DICOM over TLS if configured."""
    endpoints = {PLAIN_ENDPOINT: dicom.port}
    if dicom.tls.port is not None and tls_context_configured(dicom):
        endpoints[TLS_ENDPOINT] = dicom.tls.port
    return endpoints


def tls_context_configured(dicom: DicomSettings) -> bool:
    return dicom.tls.cert_file is not None and dicom.tls.key_file is not None


def start_listener(
    settings: GatewaySettings,
    engine: Engine,
    *,
    bind: bool = True,
    on_study_complete: Callable[[], None] | None = None,
) -> Listener:
    """Serve the plain (and, if configured, TLS) endpoint in background threads.

    With `bind` false nothing listens: connections accepted by another process arrive
    through `Listener.deliver` (gateway/dicom/dispatch.py). `on_study_complete` is called
    when a completion signal (MPPS, Storage Commitment) completes a study.
    """
    configure_pynetdicom_logging()
    dicom = settings.dicom
    ae = build_ae(dicom)
    spool = Spool(
        settings.spool_dir,
        min_free_bytes=settings.storage.min_free_mb * 1024 * 1024,
        fsync=settings.storage.fsync,
    )
    peers = PeerPolicy(
        dicom.ae_title, dicom.allowed_peers, require_called_ae_title=dicom.require_called_ae_title
    )
    rejections = RejectionAudit(partial(_write_audit, engine), dicom.rejection_audit_window_s)
    completion = settings.completion
    commitment = StorageCommitmentSCP(
        engine,
        completion,
        own_ae_title=dicom.ae_title,
        spool_dir=settings.spool_dir,
        durable=settings.storage.fsync,
    )
    watch = CompletionWatch(
        engine, completion.signal_refresh_s, commitment.wake.set, on_study_complete
    )
    scp = StorageSCP(
        engine,
        spool,
        peers,
        DatasetLimits.from_settings(dicom),
        rejections=rejections,
        patient_index=PatientIndex.from_settings(settings),
        on_stored=watch.instance_stored,
    )
    handlers = scp.handlers()
    if completion.mpps:  # same allow-list (on_requested) and audit as C-STORE
        handlers += MppsSCP(engine, watch.check).handlers()
    if completion.storage_commitment:
        handlers += commitment.handlers()
    contexts = supported_contexts(completion)
    context = tls_context(dicom)
    guard = ConnectionGuard(connection_limits(dicom))
    limits = pdu_limits(dicom)
    listener = Listener(servers=[], rejections=rejections, association_ends=scp.association_ends)
    try:
        for name, port in listener_endpoints(dicom).items():
            ssl_context = context if name == TLS_ENDPOINT else None
            server = GatewayAssociationServer(
                ae,
                (dicom.host, port),
                dicom.ae_title,
                contexts,
                evt_handlers=handlers,
                bind=bind,
                tcp_quickack=dicom.tcp_quickack,
                tls_context=ssl_context,
                handshake_timeout_s=dicom.acse_timeout_s,
                network_timeout_s=dicom.network_timeout_s,
                guard=guard,
                pdu_limits=limits,
                on_refused=scp.on_connection_refused,
                on_tls_failure=scp.on_tls_failure,
            )
            listener.servers.append(server)
            listener.by_endpoint[name] = server
            if not bind:
                continue  # connections arrive through deliver()
            thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.2},
                name=f"dicom-listener-{port}",
                daemon=True,
            )
            thread.start()
            listener.threads.append(thread)
        flusher = threading.Thread(
            target=listener.flush_rejections,
            args=(min(5.0, dicom.rejection_audit_window_s),),
            name="dicom-rejection-audit",
            daemon=True,
        )
        flusher.start()
        listener.threads.append(flusher)
        if completion.storage_commitment:
            reporter = threading.Thread(
                target=commitment.run,
                args=(listener.stopping,),
                name="storage-commitment-reports",
                daemon=True,
            )
            reporter.start()
            listener.threads.append(reporter)
    except Exception:
        listener.stop()
        raise
    if bind:
        LOGGER.info("DICOM listener %s on %s ports %s", dicom.ae_title, dicom.host, listener.ports)
    return listener
