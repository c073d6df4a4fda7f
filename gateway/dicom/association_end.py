"""How each association that stored instances ended: released, or not (the sender died).

Per association, in memory, the Series Instance UIDs it stored and how many instances of
each. When it ends, the series are cleared (A-RELEASE) or marked interrupted (A-ABORT from
the sender, a dropped connection, our own abort on timeout or shutdown) in the database
(gateway/series_interruption.py). pynetdicom's events, and the threads they fire in:

- EVT_RELEASED (reactor thread): the peer asked for A-RELEASE and we answered.
- EVT_ACSE_RECV (reactor thread), just before EVT_ABORTED: the A-ABORT (the sender's) or
  A-P-ABORT (the connection dropped, or a protocol error) that ends it.
- EVT_ABORTED: reactor thread after one of those; the calling thread for our own
  `Association.abort()` (network timeout, shutdown), with no EVT_ACSE_RECV before it.
- EVT_CONN_CLOSE (DUL thread): fires on every close, *before* EVT_ABORTED, and after
  EVT_RELEASED. Used only as a fallback: if the association's thread ends without either
  event (the reactor saw the DUL gone first), the series are marked then.

The database writes run on one thread of their own, in the order the ends happened, so a
handler never waits for the database and a release after an abort clears its mark.
"""

from __future__ import annotations

import logging
import queue
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pynetdicom import events as evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ABORT, A_P_ABORT
from sqlalchemy import Engine

from gateway.audit import utcnow
from gateway.database import writer_queue
from gateway.ingest import Sender
from gateway.series_interruption import AssociationEnd, clear_interrupted, mark_interrupted

LOGGER = logging.getLogger(__name__)

_THREAD_END_WAIT_S = 5.0  # after the connection closed, the reactor ends within a poll
_BY_SENDER = "A-ABORT from the sender"
_BY_CONNECTION = "A-P-ABORT (connection dropped or protocol error)"
_BY_GATEWAY = "the gateway's A-ABORT (network timeout or shutdown)"
_BY_CLOSE = "the connection closing without A-RELEASE"


@dataclass
class _Carried:
    sender: Sender
    counts: Counter[str] = field(default_factory=Counter)
    abort_received: str | None = None  # set by EVT_ACSE_RECV


class AssociationEnds:
    """Handlers shared by every association of a listener; `close()` drains the writes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writers = writer_queue(engine)
        self._lock = threading.Lock()
        self._carried: weakref.WeakKeyDictionary[Association, _Carried] = (
            weakref.WeakKeyDictionary()
        )
        self._tasks: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False

    def handlers(self) -> list[tuple[evt.EventType, Any]]:
        return [
            (evt.EVT_ACSE_RECV, self.on_acse_recv),
            (evt.EVT_RELEASED, self.on_released),
            (evt.EVT_ABORTED, self.on_aborted),
            (evt.EVT_CONN_CLOSE, self.on_conn_close),
        ]

    def stored(self, assoc: Association, sender: Sender, series_instance_uid: str) -> None:
        """An instance of the series was acknowledged (0x0000) on this association."""
        try:  # the instance is stored whatever happens here
            with self._lock:
                carried = self._carried.get(assoc)
                if carried is None:
                    carried = self._carried[assoc] = _Carried(sender)
                carried.counts[series_instance_uid] += 1
        except Exception as exc:
            LOGGER.error("association end: %s while counting a store", type(exc).__name__)

    # pynetdicom handlers: never raise, never touch the database -------------------------
    def on_acse_recv(self, event: evt.Event) -> None:
        try:
            primitive = getattr(event, "primitive", None)  # set for EVT_ACSE_RECV
            how = (
                _BY_SENDER
                if isinstance(primitive, A_ABORT)
                else _BY_CONNECTION
                if isinstance(primitive, A_P_ABORT)
                else None
            )
            if how is not None:
                with self._lock:
                    carried = self._carried.get(event.assoc)
                    if carried is not None and carried.abort_received is None:
                        carried.abort_received = how
        except Exception as exc:
            LOGGER.error("association end: %s on ACSE primitive", type(exc).__name__)

    def on_released(self, event: evt.Event) -> None:
        self._settle(event.assoc, released=True)

    def on_aborted(self, event: evt.Event) -> None:
        self._settle(event.assoc, released=False)

    def on_conn_close(self, event: evt.Event) -> None:
        try:
            assoc, closed_at = event.assoc, utcnow()
            with self._lock:
                pending = assoc in self._carried and not self._closed
            if pending:  # EVT_ABORTED usually follows: decide once the reactor has ended
                self._submit(lambda: self._settle_after_thread(assoc, closed_at))
        except Exception as exc:
            LOGGER.error("association end: %s on connection close", type(exc).__name__)

    def _settle_after_thread(self, assoc: Association, closed_at: datetime) -> None:
        """On the writer thread: written here, not queued again, to keep the order of ends."""
        if assoc is not threading.current_thread():
            assoc.join(timeout=_THREAD_END_WAIT_S)
        end = self._end(assoc, released=False, at=closed_at, how=_BY_CLOSE)
        if end is not None:
            self._write(end)

    def _settle(self, assoc: Association, *, released: bool) -> None:
        try:
            end = self._end(assoc, released=released, at=utcnow())
            if end is not None:
                self._submit(lambda: self._write(end))
        except Exception as exc:
            LOGGER.error("association end: %s while settling", type(exc).__name__)

    def _end(
        self, assoc: Association, *, released: bool, at: datetime, how: str | None = None
    ) -> AssociationEnd | None:
        """The first end of an association decides; an abort says how from the primitive
        EVT_ACSE_RECV saw, else it was ours. None if it stored nothing or was settled."""
        with self._lock:
            carried = self._carried.pop(assoc, None)
        if carried is None:
            return None
        ended_by = None if released else carried.abort_received or how or _BY_GATEWAY
        end = AssociationEnd(
            carried.sender.ae_title, carried.sender.address, at, dict(carried.counts), ended_by
        )
        if ended_by is not None:
            LOGGER.warning(
                "association from %s at %s ended by %s after storing %d series",
                end.ae_title,
                end.address,
                ended_by,
                len(end.series_counts),
            )
        return end

    # The writer thread -------------------------------------------------------------------
    def _submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            if self._closed:
                LOGGER.error("association end after the listener stopped: not recorded")
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="dicom-association-ends", daemon=True
                )
                self._thread.start()
            self._tasks.put(task)

    def _run(self) -> None:
        while (task := self._tasks.get()) is not None:
            try:
                task()
            except Exception as exc:  # the database may be down: log, keep going
                LOGGER.error("association end not recorded: %s: %s", type(exc).__name__, exc)

    def _write(self, end: AssociationEnd) -> None:
        with self._writers, self.engine.begin() as connection:
            if end.ended_by is None:
                clear_interrupted(connection, end)
            else:
                mark_interrupted(connection, end)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write what is queued (the aborts of a stopping listener), then stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
            self._tasks.put(None)
        if thread is not None:
            thread.join(timeout=timeout_s)
