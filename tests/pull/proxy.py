"""A TCP proxy that forwards to a real server and cuts every connection once a set number of
bytes has passed in one direction: a source PACS that goes down in the middle of a study."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.conftest import free_port


class CuttingProxy:
    def __init__(self, target_port: int, cut_after: int, direction: str) -> None:
        """`direction`: "down" counts bytes from the target (its replies), "up" bytes to it."""
        self.target_port = target_port
        self.cut_after = cut_after
        self.direction = direction
        self.port = free_port()
        self.cuts = 0
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            sent = [0]
            lock = threading.Lock()
            for source, sink, counted in (
                (client, upstream, self.direction == "up"),
                (upstream, client, self.direction == "down"),
            ):
                threading.Thread(
                    target=self._pump,
                    args=(source, sink, counted, sent, lock, (client, upstream)),
                    daemon=True,
                ).start()

    def _pump(
        self,
        source: socket.socket,
        sink: socket.socket,
        counted: bool,
        sent: list[int],
        lock: threading.Lock,
        both: tuple[socket.socket, socket.socket],
    ) -> None:
        try:
            while True:
                data = source.recv(16384)
                if not data:
                    break
                if counted:
                    with lock:
                        room = self.cut_after - sent[0]
                        sent[0] += len(data)
                    if room <= len(data):
                        sink.sendall(data[: max(0, room)])
                        self.cuts += 1
                        break
                sink.sendall(data)
        except OSError:
            pass
        for sock in both:  # the peer vanishes: no orderly end of either side
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=5)
