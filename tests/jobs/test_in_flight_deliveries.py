"""A job whose deliveries another deliverer claimed a moment before its own pass waits for
them (workers/jobs/runner.py, `IN_FLIGHT_WAIT_S`) instead of retrying after the claim's
lease; a delivery that failed an attempt keeps its backoff. `pacs-gateway selftest`
(tests/pipeline/test_run_and_selftest.py) met the race: the PACS had both results while the
job stayed "results built"."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

from gateway.audit import utcnow
from gateway.models import DeliveryState
from workers.jobs.runner import _in_flight


def _row(state: DeliveryState, last_error: str | None, in_s: float) -> SimpleNamespace:
    return SimpleNamespace(
        destination="pacs",
        state=state,
        last_error=last_error,
        next_attempt_at=utcnow() + timedelta(seconds=in_s),
    )


def test_claimed_by_another_deliverer_is_in_flight() -> None:
    claimed = _row(DeliveryState.PENDING, None, 120)  # the claim's lease
    done = _row(DeliveryState.DELIVERED, None, -1)
    assert _in_flight([claimed, done])
    assert _in_flight([claimed, claimed])


def test_backing_off_due_failed_or_done_is_not() -> None:
    claimed = _row(DeliveryState.PENDING, None, 120)
    backing_off = _row(DeliveryState.PENDING, "association rejected", 30)
    due = _row(DeliveryState.PENDING, None, -1)
    failed = _row(DeliveryState.FAILED, "rejected for good", -1)
    done = _row(DeliveryState.DELIVERED, None, -1)
    assert not _in_flight([backing_off])
    assert not _in_flight([claimed, backing_off])
    assert not _in_flight([due])
    assert not _in_flight([claimed, failed])
    assert not _in_flight([done, done])
    assert not _in_flight([])
