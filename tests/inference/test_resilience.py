"""Retry, back-off, deadline and circuit breaker logic (fake clock, no server)."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from gateway.inference_config import InferenceSettings
from workers.inference import (
    CircuitOpenError,
    PermanentInferenceError,
    TransientInferenceError,
    TritonRunner,
)
from workers.inference.runners import CircuitBreaker, Deadline


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_circuit_breaker_opens_and_half_opens() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(threshold=3, reset_s=10.0, clock=clock)
    for _ in range(2):
        breaker.failure()
    breaker.before_call()  # still closed
    breaker.failure()
    assert breaker.is_open
    with pytest.raises(CircuitOpenError, match=r"retry in 10\.0 s"):
        breaker.before_call()
    clock.now = 10.5
    breaker.before_call()  # half-open: one try allowed
    breaker.success()
    assert not breaker.is_open


@pytest.mark.parametrize(
    ("status", "message", "kind"),
    [
        ("StatusCode.UNAVAILABLE", "failed to connect", TransientInferenceError),
        ("StatusCode.DEADLINE_EXCEEDED", "Deadline Exceeded", TransientInferenceError),
        ("StatusCode.INVALID_ARGUMENT", "unexpected shape for input 'image'", None),
        ("StatusCode.NOT_FOUND", "Request for unknown model", None),
        ("StatusCode.UNAVAILABLE", "model 'x' is not ready", TransientInferenceError),
    ],
)
def test_error_classification(status: str, message: str, kind: type | None) -> None:
    err = TritonRunner.classify(InferenceServerException(msg=message, status=status))
    if kind is None:
        assert isinstance(err, PermanentInferenceError)
    else:
        assert isinstance(err, kind) and not isinstance(err, PermanentInferenceError)
    assert message in str(err)


def _runner(clock: FakeClock, **kw: float) -> TritonRunner:
    settings = InferenceSettings(
        triton_grpc_url="127.0.0.1:1", backoff_initial_s=1.0, backoff_max_s=4.0, **kw
    )
    runner = TritonRunner(settings, sleep=clock.sleep)
    runner.breaker = CircuitBreaker(
        settings.circuit_failure_threshold, settings.circuit_reset_s, clock=clock
    )
    return runner


def test_retries_with_exponential_backoff_then_succeed() -> None:
    clock = FakeClock()
    runner = _runner(clock, max_retries=5, circuit_failure_threshold=10)
    calls: list[float] = []

    def flaky(timeout: float) -> str:
        calls.append(clock.now)
        if len(calls) < 4:
            raise InferenceServerException(msg="down", status="StatusCode.UNAVAILABLE")
        return "ok"

    assert runner._call("test", Deadline(100, clock=clock), flaky) == "ok"
    assert calls == [0.0, 1.0, 3.0, 7.0]  # back-off 1, 2, 4 s


def test_permanent_error_is_not_retried() -> None:
    clock = FakeClock()
    runner = _runner(clock)
    calls = []

    def bad(timeout: float) -> None:
        calls.append(1)
        raise InferenceServerException(msg="unexpected shape", status="StatusCode.INVALID_ARGUMENT")

    with pytest.raises(PermanentInferenceError, match="unexpected shape"):
        runner._call("test", Deadline(100, clock=clock), bad)
    assert len(calls) == 1


def test_deadline_bounds_retries_and_timeouts() -> None:
    clock = FakeClock()
    runner = _runner(
        clock, max_retries=1000, request_timeout_s=30.0, circuit_failure_threshold=1000
    )
    timeouts: list[float] = []

    def down(timeout: float) -> None:
        timeouts.append(timeout)
        clock.now += timeout  # each call waits its whole timeout
        raise InferenceServerException(
            msg="Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED"
        )

    with pytest.raises(TransientInferenceError, match="within the deadline of 10 s"):
        runner._call("test", Deadline(10, clock=clock), down)
    assert timeouts[0] == 10.0  # client_timeout never exceeds the remaining deadline
    assert clock.now <= 10.0 + 1e-9
