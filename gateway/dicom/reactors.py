"""Event-driven reactor loops for accepted associations, in place of pynetdicom's polling.

pynetdicom 3.0 runs two polling threads per association: the DUL reactor sleeps
`_run_loop_delay` (1 ms; we had lowered it to 0.1 ms) whenever it found nothing to do, then
polls the socket with `select(..., 0)`, and the association reactor sleeps a fixed 1 ms
before each look for a decoded DIMSE message. With a sender that waits for each C-STORE
response, every instance pays up to a millisecond of that sleep, and an idle association
still wakes the process thousands of times per second (measured: bench/results/
ingest_profile.md). Here both threads block until there is work instead:

- the DUL thread waits in poll() on the socket and on an eventfd that is written whenever
  the association puts a primitive to send on `to_provider_queue`;
- the association thread waits on a threading.Event set whenever the DUL puts a decoded
  DIMSE message (`msg_queue`) or an ACSE primitive (`to_user_queue`) for it, and when the
  DUL thread ends.

Both loops are pynetdicom 3.0's own (`DULServiceProvider.run_reactor`,
`Association._run_reactor`) with only the sleeps replaced, so every state-machine path is
unchanged; each still wakes at least every `IDLE_WAIT_S` for timers (ARTIM, network
timeout). Other pynetdicom versions keep their own loops (`install` returns False).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import pynetdicom
from pynetdicom import evt
from pynetdicom.pdu import A_ABORT_RQ

LOGGER = logging.getLogger(__name__)

# The loops below mirror these versions' internals.
SUPPORTED_PYNETDICOM = ("3.0.",)
# Longest wait without an event: bounds how late an expired timer is noticed.
IDLE_WAIT_S = 0.05
# States in which the DUL has no socket to wait on, or must poll it to close it.
_POLLING_STATES = ("Sta1", "Sta13")
_POLLING_DELAY_S = 0.001  # pynetdicom's own delay, used in those states


class WakingQueue(queue.Queue[Any]):
    """A queue that calls `on_put` after each put, to wake the thread that consumes it."""

    def __init__(self, on_put: Callable[[], None]) -> None:
        super().__init__()
        self._on_put = on_put

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._on_put()


class EventFd:
    """An eventfd the DUL thread can poll beside its socket; writes after close are no-ops
    (the association thread may still send after the DUL thread ended and closed it)."""

    def __init__(self) -> None:
        self.fd: int | None = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._lock = threading.Lock()

    def set(self) -> None:
        with self._lock:
            if self.fd is not None:
                os.eventfd_write(self.fd, 1)

    def drain(self) -> None:
        with self._lock:
            if self.fd is not None:
                with contextlib.suppress(BlockingIOError):  # nothing was written
                    os.eventfd_read(self.fd)

    def close(self) -> None:
        with self._lock:
            fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def install(assoc: Any) -> bool:
    """Replace both reactor loops of a not yet started acceptor association."""
    if not pynetdicom.__version__.startswith(SUPPORTED_PYNETDICOM):
        return False
    dul = assoc.dul
    user_wake = threading.Event()  # the association thread has something to look at
    provider_wake = EventFd()  # the DUL thread has a primitive to send
    # Still empty: the threads start later, in Association.run().
    assoc.dimse.msg_queue = WakingQueue(user_wake.set)
    dul.to_user_queue = WakingQueue(user_wake.set)
    dul.to_provider_queue = WakingQueue(provider_wake.set)
    dul._target = lambda: _run_dul(dul, provider_wake, user_wake)
    assoc._run_reactor = lambda: _run_acceptor(assoc, user_wake)
    return True


def _wait_for_work(dul: Any, wake: EventFd, poller: select.poll | None) -> select.poll | None:
    """Block until the peer sent something, a primitive waits to be sent, or IDLE_WAIT_S."""
    if dul.to_provider_queue.queue or dul._kill_thread:
        return poller
    transport = dul.socket
    sock = None if transport is None else transport.socket
    if (
        sock is None
        or not transport._is_connected
        or dul.state_machine.current_state in _POLLING_STATES
        or wake.fd is None
    ):
        time.sleep(_POLLING_DELAY_S)
        return poller
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return poller  # decrypted bytes already buffered: poll() would not see them
    if poller is None:
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        poller.register(wake.fd, select.POLLIN)
    try:
        poller.poll(IDLE_WAIT_S * 1000)
    except (OSError, ValueError):
        return None  # the socket went away: the loop's own check reports it (Evt17)
    wake.drain()
    return poller


def _run_dul(dul: Any, wake: EventFd, user_wake: threading.Event) -> None:
    """pynetdicom 3.0's DULServiceProvider.run_reactor, waiting instead of sleeping."""
    try:
        dul._idle_timer.start()
        sleep = False
        poller: select.poll | None = None
        while True:
            if not dul.assoc._dul_ready.is_set():
                dul.assoc._dul_ready.set()
                sleep = True
            if sleep:
                poller = _wait_for_work(dul, wake, poller)
            if dul._kill_thread:
                break
            if dul.artim_timer.expired:
                dul.event_queue.put("Evt18")
            try:
                if dul._process_recv_primitive():
                    pass
                elif dul._is_transport_event():
                    dul._idle_timer.restart()
            except Exception as exc:
                LOGGER.error("DUL failed on %s, aborting the association", type(exc).__name__)
                # As pynetdicom: bypass the state machine, send an A-ABORT and stop both.
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                dul.socket.send(abort_pdu.encode())
                dul.assoc.is_aborted = True
                dul.assoc.is_established = False
                dul.assoc._kill = True
                dul._kill_thread = True
                return
            try:
                event = dul.event_queue.get(block=False)
            except queue.Empty:
                sleep = True
                continue
            dul.state_machine.do_action(event)
            sleep = False
    finally:
        wake.close()
        user_wake.set()  # the association notices that the DUL has ended


def _run_acceptor(assoc: Any, wake: threading.Event) -> None:
    """pynetdicom 3.0's Association._run_reactor, waiting instead of sleeping 1 ms."""
    assoc._is_paused = False
    served = False
    while not assoc._kill:
        # Paused while waiting: a thread that pauses the reactor to send on this
        # association (send_n_event_report, ...) need not wait for the timeout.
        assoc._is_paused = True
        if not served:  # after a message, look for the next one at once
            wake.wait(IDLE_WAIT_S)
        wake.clear()  # whatever was put before this is looked at below
        assoc._reactor_checkpoint.wait()
        assoc._is_paused = False

        context_id, msg = assoc.dimse.get_msg(block=False)
        served = msg is not None
        if msg:
            assoc._serve_request(msg, context_id)

        if assoc.is_established and assoc.acse.is_release_requested():
            assoc.acse.send_release(is_response=True)
            assoc.is_released = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_RELEASED, {})
            assoc.kill()
            return

        if assoc.acse.is_aborted():
            assoc.dul.receive_pdu(wait=False)  # EVT_ACSE_RECV fires for subscribers
            assoc.is_aborted = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_ABORTED, {})
            assoc.kill()
            return

        if not assoc.dul.is_alive():
            assoc.kill()
            return

        if assoc.dul.idle_timer_expired():
            LOGGER.warning("network timeout reached, ending the association")
            if assoc.network_timeout_response == "A-RELEASE":
                assoc._is_paused = True
                assoc._reactor_checkpoint.wait()
                assoc.release()
                assoc._is_paused = False
            else:
                assoc.abort()
            assoc.kill()
            return
