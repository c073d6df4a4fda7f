"""Socket-level tuning of pynetdicom's server for throughput and safety.

- TCP_NODELAY on accepted sockets: our small C-STORE responses go out at once.
- TCP_QUICKACK before each read: senders that leave Nagle's algorithm on (DCMTK's and
  Orthanc's default, many modalities) would otherwise wait for our delayed ACK (~40 ms) on
  every instance. Linux clears the flag by itself, hence "before each read".
- Unbound servers: with several listener processes, one acceptor hands each connection to
  a worker process (gateway/dicom/dispatch.py), whose server never listens itself.
- The TLS handshake runs in the connection's own thread, with a deadline, not in the accept
  loop where one stalled client would block every other.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
from collections.abc import Callable
from typing import Any

from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

LOGGER = logging.getLogger(__name__)
_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only
# pynetdicom's DUL reactor sleeps 1 ms whenever its queue is empty; at hundreds of instances
# per second that sleep is a large share of each instance's time.
DUL_LOOP_DELAY_S = 0.0001


class QuickAckSocket(socket.socket):
    """A TCP socket that asks the kernel to acknowledge at once before every read."""

    @classmethod
    def adopt(cls, raw: socket.socket) -> QuickAckSocket:
        timeout = raw.gettimeout()
        adopted = cls(raw.family, raw.type, raw.proto, fileno=raw.detach())
        adopted.settimeout(timeout)
        return adopted

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if _TCP_QUICKACK is not None:
            self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
        return super().recv(bufsize, flags)


class GatewayRequestHandler(RequestHandler):
    server: GatewayAssociationServer

    def setup(self) -> None:
        raw: socket.socket = self.request
        if raw.family in (socket.AF_INET, socket.AF_INET6):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        context = self.server.tls_context
        if context is None:
            if self.server.tcp_quickack and _TCP_QUICKACK is not None:
                self.request = QuickAckSocket.adopt(raw)
            return
        raw.settimeout(self.server.handshake_timeout_s)
        try:
            self.request = context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or type(exc).__name__
            self.server.on_tls_failure(str(self.client_address[0]), str(reason))
            raise
        self.request.settimeout(self.server.network_timeout_s)

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        assoc.dul._run_loop_delay = DUL_LOOP_DELAY_S
        return assoc


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
        on_tls_failure: Callable[[str, str], None] = lambda address, reason: None,
        **kwargs: Any,
    ) -> None:
        self.bind_socket = bind
        self._serving = False
        self.tcp_quickack = tcp_quickack
        self.tls_context = tls_context
        self.handshake_timeout_s = handshake_timeout_s
        self.network_timeout_s = network_timeout_s
        self.on_tls_failure = on_tls_failure
        self.daemon_threads = True
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
        # Failed TLS handshakes and dropped connections: one line, no traceback spam.
        LOGGER.warning("connection from %s failed before association", client_address[0])
