"""Audit events for refused connections and rejected associations, aggregated per peer.

Every rejection used to write its own row: a flood of 1,225 rejected associations in 30 s
wrote 1,225 rows, so anyone on the network could fill the audit log and the disk. Now the
first refusal of an address for a reason within a window is written at once (an operator
sees it immediately) and the rest of that window are counted and written as one row when
the window ends: at most two rows per address, reason and window.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.audit import AuditKind, Outcome, audit_row

LOGGER = logging.getLogger(__name__)
WriteRows = Callable[[list[dict[str, Any]]], None]


@dataclass
class _Window:
    started_at: float
    repeated: int = 0
    actors: set[str] = field(default_factory=set)
    detail: dict[str, Any] = field(default_factory=dict)


class RejectionAudit:
    """Thread-safe; `flush_due()` is called periodically (and on each new rejection)."""

    MAX_ACTORS_KEPT = 16  # calling AE titles listed in a summary row

    def __init__(self, write: WriteRows, window_s: float) -> None:
        self._write = write
        self.window_s = window_s
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str, str], _Window] = {}

    def note(
        self,
        address: str,
        reason: str,
        *,
        actor: str | None = None,
        detail: dict[str, Any] | None = None,
        variant: str = "",
    ) -> bool:
        """Count one refusal; True when it is the first of its window (audited at once).

        `variant` splits a reason where the difference matters to an operator (which TLS
        error), from a small fixed set: never a value the peer chooses freely.
        """
        now = time.monotonic()
        key = (address, reason, variant)
        with self._lock:
            rows = self._take_due(now)
            window = self._windows.get(key)
            if window is None:
                self._windows[key] = _Window(started_at=now)
                rows.append(self._row(address, reason, actor, detail or {}, repeated=None))
                first = True
            else:
                first = False
                window.repeated += 1
                if actor and len(window.actors) < self.MAX_ACTORS_KEPT:
                    window.actors.add(actor)
                window.detail = detail or window.detail
        self._emit(rows)
        return first

    def flush_due(self) -> None:
        with self._lock:
            rows = self._take_due(time.monotonic())
        self._emit(rows)

    def flush_all(self) -> None:
        with self._lock:
            rows = self._take_due(float("inf"))
        self._emit(rows)

    def _take_due(self, now: float) -> list[dict[str, Any]]:
        # Caller holds the lock.
        rows: list[dict[str, Any]] = []
        for key, window in list(self._windows.items()):
            if now - window.started_at < self.window_s:
                continue
            del self._windows[key]
            if window.repeated:
                address, reason, _variant = key
                actor = ",".join(sorted(window.actors)) or None
                rows.append(
                    self._row(address, reason, actor, window.detail, repeated=window.repeated)
                )
        return rows

    def _row(
        self,
        address: str,
        reason: str,
        actor: str | None,
        detail: dict[str, Any],
        *,
        repeated: int | None,
    ) -> dict[str, Any]:
        summary: dict[str, Any] = {**detail, "reason": reason}
        if repeated is not None:
            summary.update(repeated=repeated, window_s=self.window_s)
        return audit_row(
            AuditKind.ASSOCIATION_REJECTED,
            Outcome.FAILURE,
            actor=actor[:128] if actor else None,
            source_address=address[:64],
            detail=summary,
        )

    def _emit(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        try:
            self._write(rows)
        except Exception as exc:  # the audit must not take the listener down
            LOGGER.error("audit write failed: %s", type(exc).__name__)
