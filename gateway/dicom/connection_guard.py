"""Limits on connections before and after they become associations.

pynetdicom counts every connection against `maximum_associations` from the moment it is
accepted, so connections that never send a valid A-ASSOCIATE-RQ (port scans, stalled or
malformed requests) take the slots of the modalities we serve. Here a connection is
*pending* until its association request passed the peer check, and *associated* after:

- pending connections have their own cap, over all addresses and per source address; when
  the global cap is full the oldest pending connection is closed to make room (a sender
  that really wants to associate sends its request within milliseconds, a staller never);
- associated connections count against `max_associations`, the limit for allowed peers;
- every source address has a cap on its connections of either kind.

One guard serves every endpoint (plain and TLS) of a listener process.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_associations: int
    max_pending: int
    max_pending_per_address: int
    max_per_address: int


@dataclass(eq=False)
class ConnectionSlot:
    """One accepted connection, held until `ConnectionGuard.release`."""

    address: str
    connection: socket.socket
    opened_at: float = field(default_factory=time.monotonic)
    associated: bool = False
    evicted: bool = False  # closed to make room; counts per address until released
    released: bool = False


class ConnectionRefused(Exception):
    """A limit refused the connection; the message names it with the numbers."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ConnectionGuard:
    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._pending: list[ConnectionSlot] = []  # oldest first
        self._associated = 0
        self._per_address: Counter[str] = Counter()
        self._pending_per_address: Counter[str] = Counter()

    def admit(self, address: str, connection: socket.socket) -> ConnectionSlot:
        """A pending slot for a new connection; raises `ConnectionRefused` past a cap."""
        evicted: ConnectionSlot | None = None
        with self._lock:
            if self._per_address[address] >= self.limits.max_per_address:
                raise ConnectionRefused(
                    "connection_limit_per_address",
                    f"expected at most {self.limits.max_per_address} connections from "
                    f"{address}, found {self._per_address[address]} open",
                )
            if self._pending_per_address[address] >= self.limits.max_pending_per_address:
                raise ConnectionRefused(
                    "pending_limit_per_address",
                    f"expected at most {self.limits.max_pending_per_address} connections "
                    f"from {address} without an association, found "
                    f"{self._pending_per_address[address]}",
                )
            if len(self._pending) >= self.limits.max_pending:
                evicted = self._pending[0]
                self._forget_pending(evicted)
                evicted.evicted = True
            slot = ConnectionSlot(address, connection)
            self._pending.append(slot)
            self._per_address[address] += 1
            self._pending_per_address[address] += 1
        if evicted is not None:
            _close(evicted.connection)
        return slot

    def promote(self, slot: ConnectionSlot) -> bool:
        """The association request passed the peer check: take an association slot.

        False when `max_associations` are established already (answer local limit
        exceeded) or the connection was closed meanwhile.
        """
        with self._lock:
            if slot.released or slot.evicted or slot.associated:
                return slot.associated
            if self._associated >= self.limits.max_associations:
                return False
            self._forget_pending(slot)
            slot.associated = True
            self._associated += 1
            return True

    def release(self, slot: ConnectionSlot) -> None:
        """The connection has ended (idempotent)."""
        with self._lock:
            if slot.released:
                return
            slot.released = True
            if slot.associated:
                self._associated -= 1
            elif not slot.evicted:
                self._forget_pending(slot)
            self._per_address[slot.address] -= 1
            if self._per_address[slot.address] <= 0:
                del self._per_address[slot.address]

    def counts(self) -> tuple[int, int]:
        """(pending, associated) now."""
        with self._lock:
            return len(self._pending), self._associated

    def _forget_pending(self, slot: ConnectionSlot) -> None:
        # Caller holds the lock.
        self._pending.remove(slot)
        self._pending_per_address[slot.address] -= 1
        if self._pending_per_address[slot.address] <= 0:
            del self._pending_per_address[slot.address]


def _close(connection: socket.socket) -> None:
    """Wake whoever reads `connection`: its association then ends and releases the slot."""
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
