"""Several listener processes behind one port, with associations spread evenly.

One Python process tops out at a few hundred instances per second, so a PACS sending on
several associations needs more processes. SO_REUSEPORT would let each process listen, but
the kernel then picks a process by a hash of the connection's addresses, and with a handful
of associations it often gives them all to one process. Here the main process accepts and
hands each connection (its file descriptor, over a Unix socket) to the next live worker
process in turn; the worker's pynetdicom server serves it as if it had accepted it.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import selectors
import socket
import threading
from collections.abc import Callable
from typing import Any

LOGGER = logging.getLogger(__name__)
Address = tuple[str, int]
READY = b"R"  # a worker's first message on its channel: it can serve connections now
WORKER_START_TIMEOUT_S = 120.0


def hand_over(channel: socket.socket, connection: socket.socket, endpoint: str, peer: Any) -> None:
    payload = json.dumps({"endpoint": endpoint, "peer": [str(peer[0]), int(peer[1])]})
    socket.send_fds(channel, [payload.encode()], [connection.fileno()])


def receive_connections(
    channel: socket.socket, deliver: Callable[[str, socket.socket, Address], None]
) -> None:
    """Deliver each handed-over connection until the acceptor closes the channel."""
    while True:
        try:
            message, fds, _flags, _address = socket.recv_fds(channel, 4096, 1)
        except OSError:
            return
        if not message or not fds:
            return
        record = json.loads(message)
        connection = socket.socket(fileno=fds[0])
        peer = (str(record["peer"][0]), int(record["peer"][1]))
        deliver(str(record["endpoint"]), connection, peer)


class WorkerPool:
    """Listener worker processes, each with a channel for handed-over connections."""

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...], size: int) -> None:
        self._target = target
        self._args = args
        # Spawned, not forked: the main process already runs threads.
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[tuple[Any, socket.socket]] = []
        self._lock = threading.Lock()
        self._next = 0
        for number in range(size):
            self._workers.append(self._start(number))
        # Listen only once every worker can serve: otherwise the first associations would
        # wait for a worker's imports and start-up (about a second of CPU each).
        for process, channel in self._workers:
            self._wait_ready(process, channel)

    @staticmethod
    def _wait_ready(process: Any, channel: socket.socket) -> None:
        channel.settimeout(WORKER_START_TIMEOUT_S)
        try:
            message = channel.recv(1)
        except TimeoutError as exc:
            raise RuntimeError(
                f"expected {process.name} ready within {WORKER_START_TIMEOUT_S:.0f} s, "
                "found no answer"
            ) from exc
        finally:
            channel.settimeout(None)
        if message != READY:
            raise RuntimeError(
                f"expected {process.name} to report ready, found exit code {process.exitcode}"
            )

    def _start(self, number: int) -> tuple[Any, socket.socket]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        process = self._context.Process(
            target=self._target,
            args=(*self._args, theirs),
            name=f"listener-{number + 1}",
            daemon=True,
        )
        process.start()
        theirs.close()
        return process, ours

    def dispatch(self, connection: socket.socket, endpoint: str, peer: Any) -> None:
        """Hand `connection` to the next live worker; restart workers that died."""
        with self._lock:
            for _attempt in range(len(self._workers) + 1):
                index = self._next % len(self._workers)
                self._next += 1
                process, channel = self._workers[index]
                if process.is_alive():
                    try:
                        hand_over(channel, connection, endpoint, peer)
                        return
                    except OSError as exc:
                        LOGGER.error("listener %s unreachable: %s", process.name, exc)
                LOGGER.error(
                    "listener %s died (exit %s): restarting", process.name, process.exitcode
                )
                channel.close()
                self._workers[index] = self._start(index)
        raise RuntimeError("expected a live listener process, found none")

    @property
    def pids(self) -> list[int]:
        return [int(process.pid) for process, _channel in self._workers]

    def stop(self) -> None:
        with self._lock:
            for process, channel in self._workers:
                channel.close()  # the worker's receive loop ends
                process.terminate()
            for process, _channel in self._workers:
                process.join(timeout=15)
                if process.is_alive():
                    process.kill()


class Acceptor:
    """Listens on the public ports and dispatches every connection to the pool."""

    def __init__(self, endpoints: dict[str, Address], pool: WorkerPool) -> None:
        self.pool = pool
        self.selector = selectors.DefaultSelector()
        self.sockets: dict[str, socket.socket] = {}
        try:
            for name, address in endpoints.items():
                sock = socket.create_server(address, reuse_port=False, backlog=128)
                sock.setblocking(False)
                self.selector.register(sock, selectors.EVENT_READ, name)
                self.sockets[name] = sock
        except Exception:
            self.close()
            raise

    @property
    def ports(self) -> list[int]:
        return [int(sock.getsockname()[1]) for sock in self.sockets.values()]

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            for key, _events in self.selector.select(timeout=0.2):
                listening: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    connection, peer = listening.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                try:
                    self.pool.dispatch(connection, str(key.data), peer)
                except Exception as exc:
                    LOGGER.error("could not dispatch a connection: %s", exc)
                finally:
                    connection.close()  # the worker holds its own descriptor now

    def close(self) -> None:
        for sock in self.sockets.values():
            self.selector.unregister(sock)
            sock.close()
        self.sockets.clear()
