"""Socket-level tuning of pynetdicom's server for throughput and safety.

- TCP_NODELAY on accepted sockets: our small C-STORE responses go out at once.
- TCP_QUICKACK before each read: senders that leave Nagle's algorithm on (DCMTK's and
  Orthanc's default, many modalities) would otherwise wait for our delayed ACK (~40 ms) on
  every instance. Linux clears the flag by itself, hence "before each read".
- Unbound servers: with several listener processes, one acceptor hands each connection to
  a worker process (gateway/dicom/dispatch.py), whose server never listens itself.
- The TLS handshake runs in the connection's own thread, with a deadline, not in the accept
  loop where one stalled client would block every other.
- Hostile peers: every read has a deadline and every PDU a size limit (pdu_guard.py), and
  connections are counted per state and address (connection_guard.py) so that connections
  without an association never take the slots of allowed peers.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import sys
import time
from collections.abc import Callable
from typing import Any, cast

from pynetdicom import evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from gateway.dicom import reactors, store_request, store_response
from gateway.dicom.connection_guard import ConnectionGuard, ConnectionRefused, ConnectionSlot
from gateway.dicom.dul_guard import guard_state_machine
from gateway.dicom.pdu_guard import GuardedSocket, GuardedSSLSocket, PduFraming, PduLimits

LOGGER = logging.getLogger(__name__)
# A-ASSOCIATE-RJ: rejected-transient, service-provider (presentation), local limit exceeded.
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)
# pynetdicom's DUL reactor sleeps 1 ms whenever its queue is empty; at hundreds of instances
# per second that sleep is a large share of each instance's time.
DUL_LOOP_DELAY_S = 0.0001


class GatewayRequestHandler(RequestHandler):
    server: GatewayAssociationServer
    slot: ConnectionSlot | None = None

    def setup(self) -> None:
        raw: socket.socket = self.request
        address = str(self.client_address[0])
        try:
            self.slot = self.server.guard.admit(address, raw)
        except ConnectionRefused as exc:
            self.server.on_refused(address, exc.reason, str(exc))
            raise
        try:
            self._wrap(raw, address)
        except BaseException:
            self.server.guard.release(self.slot)
            raise

    def _wrap(self, raw: socket.socket, address: str) -> None:
        if raw.family in (socket.AF_INET, socket.AF_INET6):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server = self.server
        accepted_at = time.monotonic()
        framing = PduFraming(
            server.pdu_limits,
            lambda reason: server.on_refused(address, "pdu_limit", reason),
            accepted_at=accepted_at,
        )
        context = server.tls_context
        sock: GuardedSocket | GuardedSSLSocket
        if context is None:
            sock = GuardedSocket.adopt(
                raw, quickack=server.tcp_quickack, timeout_s=server.network_timeout_s
            )
        else:
            raw.settimeout(server.handshake_timeout_s)
            try:
                wrapped = context.wrap_socket(raw, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                reason = getattr(exc, "reason", None) or type(exc).__name__
                server.on_tls_failure(address, str(reason))
                raise
            sock = cast(GuardedSSLSocket, wrapped)
            sock.settimeout(server.network_timeout_s)
            sock.base_timeout = server.network_timeout_s
        sock.pdu_framing = framing
        self.request = sock
        if self.slot is not None:
            self.slot.connection = sock  # the raw object gave its descriptor away

    def handle(self) -> None:
        # pynetdicom's handle() starts the association thread and returns at once; we wait
        # for it so that the connection's slot is held exactly as long as the association.
        assoc = self._create_association()
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()
        assoc.join()

    def finish(self) -> None:
        if self.slot is not None:
            self.server.guard.release(self.slot)

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        assoc.dul._run_loop_delay = DUL_LOOP_DELAY_S  # stop_dul(), and the stock loop
        reactors.install(assoc)  # event-driven loops, where pynetdicom's version allows
        store_request.install(assoc)  # C-STORE-RQ command sets read from their bytes
        store_response.install(assoc)
        address = str(self.client_address[0])
        guard_state_machine(
            assoc, lambda reason: self.server.on_refused(address, "protocol_error", reason)
        )
        # Bound after the server's handlers: the peer check runs first.
        assoc.bind(evt.EVT_REQUESTED, self._take_association_slot)
        return assoc

    def _take_association_slot(self, event: evt.Event) -> None:
        assoc = event.assoc
        if assoc.is_rejected or assoc.is_aborted or self.slot is None:
            return
        if self.server.guard.promote(self.slot):
            return
        address = str(self.client_address[0])
        limit = self.server.guard.limits.max_associations
        self.server.on_refused(
            address,
            "association_limit",
            f"expected at most {limit} associations at once, found {limit} established",
        )
        assoc.acse.send_reject(*LOCAL_LIMIT_EXCEEDED)
        assoc.kill()


class GatewayAssociationServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the socket options above."""

    def __init__(
        self,
        *args: Any,
        bind: bool,
        tcp_quickack: bool,
        tls_context: ssl.SSLContext | None,
        handshake_timeout_s: float,
        network_timeout_s: float,
        guard: ConnectionGuard,
        pdu_limits: PduLimits,
        on_refused: Callable[[str, str, str], None] = lambda address, reason, message: None,
        on_tls_failure: Callable[[str, str], None] = lambda address, reason: None,
        **kwargs: Any,
    ) -> None:
        self.guard = guard
        self.pdu_limits = pdu_limits
        self.on_refused = on_refused
        self.bind_socket = bind
        self._serving = False
        self.tcp_quickack = tcp_quickack
        self.tls_context = tls_context
        self.handshake_timeout_s = handshake_timeout_s
        self.network_timeout_s = network_timeout_s
        self.on_tls_failure = on_tls_failure
        self.daemon_threads = True
        if tls_context is not None:
            tls_context.sslsocket_class = GuardedSSLSocket
        # ssl_context stays None in pynetdicom: we wrap in the handler thread instead.
        kwargs.update(ssl_context=None, request_handler=GatewayRequestHandler)
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        if self.bind_socket:
            super().server_bind()

    def server_activate(self) -> None:
        if self.bind_socket:
            super().server_activate()

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._serving = True
        super().serve_forever(poll_interval)

    def shutdown(self) -> None:
        # pynetdicom's shutdown() also removes the server from ae._servers, where only
        # AE.start_server() registers one; ours are built directly, so that would raise.
        if self._serving:
            socketserver.BaseServer.shutdown(self)
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Refused by a limit (already reported), failed TLS handshakes and dropped
        # connections: at most one line, no traceback spam.
        if not isinstance(sys.exc_info()[1], ConnectionRefused):
            LOGGER.warning("connection from %s failed before association", client_address[0])
