"""Abort an association cleanly when pynetdicom's state machine raises on peer input.

pynetdicom's DUL reactor catches exceptions while reading and sending, but not in the
state machine's actions, so some peer input kills the reactor thread with a traceback on
stderr: an A-ABORT or garbage racing our A-ASSOCIATE-AC (InvalidEventError 'Evt7' in
'Sta13'), or a DIMSE command set without a Command Field (AttributeError in decode_msg).
Both were found by tests/listener/test_fuzz.py. Here such an error aborts the association
the way pynetdicom's own reactor does for a transport error: an A-ABORT to the peer, then
both reactors stop, and the connection's slot is released when its thread ends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

from pynetdicom.pdu import A_ABORT_RQ

LOGGER = logging.getLogger(__name__)


def guard_state_machine(assoc: Any, on_protocol_error: Callable[[str], None]) -> None:
    """Wrap `assoc`'s state machine so that an exception in an action aborts it."""
    dul = assoc.dul
    machine = dul.state_machine
    do_action: Callable[[str], None] = machine.do_action

    def guarded_do_action(event: str) -> None:
        try:
            do_action(event)
        except Exception as exc:
            state = machine.current_state
            on_protocol_error(f"{type(exc).__name__} on {event} in {state}: {exc}"[:200])
            _abort(assoc)

    machine.do_action = guarded_do_action


def _abort(assoc: Any) -> None:
    dul = assoc.dul
    abort = A_ABORT_RQ()
    abort.source = 0x02  # service provider
    abort.reason_diagnostic = 0x00  # reason not specified
    with contextlib.suppress(Exception):  # the peer may be gone already
        dul.socket.send(abort.encode())
    assoc.is_aborted = True
    assoc.is_established = False
    assoc._kill = True
    dul._kill_thread = True
