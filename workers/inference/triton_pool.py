"""Which Triton server takes the next call, when a worker process knows several.

Per worker process (no shared state between processes, nothing to coordinate): the server
with the fewest calls in flight, ties in turn, so that sequential calls alternate and
concurrent ones spread. A server whose call failed on a transient error (connection refused,
unavailable, deadline) is skipped for a cool-down while another server is left; when every
server is cooling down or already tried, the one whose cool-down ends first is returned and
the caller backs off before calling it, as it would with one server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass


@dataclass
class ServerState:
    """What the pool knows of one server (for the choice and for diagnostics)."""

    url: str
    in_flight: int = 0
    calls: int = 0
    failures: int = 0
    cooling_until: float = 0.0


class TritonPool:
    """The choice of server; thread-safe (a worker may run calls from several threads)."""

    def __init__(
        self,
        urls: list[str],
        cooldown_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("expected at least one Triton server, found none")
        self.servers = [ServerState(url) for url in urls]
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._turns: dict[str, int] = {}
        self._lock = threading.Lock()

    def _usable(self, index: int, avoid: Collection[int], now: float) -> bool:
        return index not in avoid and self.servers[index].cooling_until <= now

    def has_alternative(self, avoid: Collection[int]) -> bool:
        """A server outside ``avoid`` that is not cooling down: worth failing over to now."""
        with self._lock:
            now = self._clock()
            return any(self._usable(i, avoid, now) for i in range(len(self.servers)))

    def acquire(self, avoid: Collection[int] = (), kind: str = "") -> int:
        """The index of the server for the next call, counted in flight until `release`.
        Turns are kept per ``kind`` of call (e.g. one model's inference): a study makes the
        same calls in the same order, so one turn for all would send every study's
        segmentation to one server and its classification to the other."""
        with self._lock:
            now = self._clock()
            n = len(self.servers)
            turn = self._turns.get(kind, 0)
            order = [(turn + k) % n for k in range(n)]  # ties go in turn
            usable = [i for i in order if self._usable(i, avoid, now)]
            if usable:
                index = min(usable, key=lambda i: self.servers[i].in_flight)
            else:
                index = min(order, key=lambda i: self.servers[i].cooling_until)
            self._turns[kind] = (index + 1) % n
            server = self.servers[index]
            server.in_flight += 1
            server.calls += 1
            return index

    def release(self, index: int, *, failed: bool | None) -> None:
        """The call on server ``index`` ended: failed (it starts a cool-down), answered
        (it ends one), or None: not made after all."""
        with self._lock:
            server = self.servers[index]
            server.in_flight -= 1
            if failed is None:
                server.calls -= 1
            elif failed:
                server.failures += 1
                server.cooling_until = self._clock() + self.cooldown_s
            else:
                server.failures = 0
                server.cooling_until = 0.0
