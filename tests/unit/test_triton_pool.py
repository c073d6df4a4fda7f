"""Balancing and failover over several Triton servers: the pool's choice, and the runner's
retry loop with a fake transport (a fake clock; no server: the real proof is
tests/scaling/test_scale_out.py)."""

from __future__ import annotations

import pytest
from tritonclient.utils import InferenceServerException

from gateway.inference_config import InferenceSettings
from workers.inference import PermanentInferenceError, TransientInferenceError, TritonRunner
from workers.inference.runners import CircuitBreaker, Deadline, TritonEndpoint
from workers.inference.triton_pool import TritonPool

A, B, C = "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_sequential_calls_alternate_and_concurrent_calls_spread() -> None:
    pool = TritonPool([A, B, C], cooldown_s=10, clock=FakeClock())
    picks = []
    for _ in range(6):
        index = pool.acquire()
        picks.append(index)
        pool.release(index, failed=False)
    assert picks == [0, 1, 2, 0, 1, 2]
    held = [pool.acquire() for _ in range(3)]  # three calls in flight at once
    assert sorted(held) == [0, 1, 2]
    pool.release(held[1], failed=False)
    assert pool.acquire() == held[1]  # the only server with nothing in flight


def test_failed_server_is_skipped_for_its_cooldown() -> None:
    clock = FakeClock()
    pool = TritonPool([A, B], cooldown_s=10, clock=clock)
    first = pool.acquire()
    pool.release(first, failed=True)
    other = 1 - first
    for _ in range(4):
        index = pool.acquire()
        assert index == other
        pool.release(index, failed=False)
    clock.now = 10.5
    assert {pool.acquire(), pool.acquire()} == {0, 1}  # back in turn after the cool-down


def test_every_server_cooling_down_gives_the_one_that_recovers_first() -> None:
    clock = FakeClock()
    pool = TritonPool([A, B], cooldown_s=10, clock=clock)
    pool.release(pool.acquire(avoid={1}), failed=True)  # server 0 fails at t=0
    clock.now = 3
    pool.release(pool.acquire(avoid={0}), failed=True)  # server 1 fails at t=3
    assert not pool.has_alternative(avoid=())
    assert pool.acquire() == 0


class FakeClient:
    """A Triton client whose `infer` fails as told: the transport of one server."""

    def __init__(self, url: str, error: str | None) -> None:
        self.url = url
        self.error = error
        self.calls = 0

    def infer(self, timeout: float) -> str:
        self.calls += 1
        if self.error == "down":
            raise InferenceServerException(msg="failed to connect", status="StatusCode.UNAVAILABLE")
        if self.error == "bad input":
            raise InferenceServerException(
                msg="unexpected shape for input 'image'", status="StatusCode.INVALID_ARGUMENT"
            )
        return self.url

    def close(self) -> None:
        pass


def _runner(clock: FakeClock, errors: dict[str, str | None], **kw: float) -> TritonRunner:
    settings = InferenceSettings(
        triton_grpc_urls=list(errors),
        triton_shared_memory=False,
        backoff_initial_s=1.0,
        triton_failover_cooldown_s=10.0,
        **kw,
    )
    runner = TritonRunner(settings, sleep=clock.sleep)
    runner.pool = TritonPool(settings.grpc_urls, settings.triton_failover_cooldown_s, clock)
    runner.endpoints = [
        TritonEndpoint(
            url, FakeClient(url, error), CircuitBreaker(100, settings.circuit_reset_s, clock)
        )
        for url, error in errors.items()
    ]
    return runner


def _infer(runner: TritonRunner, clock: FakeClock) -> str:
    return runner._call_on(
        "inference", Deadline(100, clock=clock), lambda e, timeout: e.client.infer(timeout)
    )


def _calls(runner: TritonRunner) -> list[int]:
    return [e.client.calls for e in runner.endpoints]


def test_unavailable_server_fails_over_at_once_then_is_skipped() -> None:
    clock = FakeClock()
    runner = _runner(clock, {A: "down", B: None}, max_retries=1)
    assert [_infer(runner, clock) for _ in range(4)] == [B] * 4
    assert _calls(runner) == [1, 4]  # A tried once, then left alone for its cool-down
    assert clock.now == 0.0  # no back-off while another server answers
    clock.now = 11.0
    assert _infer(runner, clock) == B
    assert _calls(runner) == [2, 5]  # after the cool-down A is tried again, fails over


def test_permanent_error_is_not_retried_on_another_server() -> None:
    clock = FakeClock()
    runner = _runner(clock, {A: "bad input", B: None}, max_retries=5)
    with pytest.raises(PermanentInferenceError, match="unexpected shape"):
        _infer(runner, clock)
    assert _calls(runner) == [1, 0]
    assert runner.pool.servers[0].cooling_until == 0.0  # it answered: no cool-down


def test_every_server_down_backs_off_within_the_retries() -> None:
    clock = FakeClock()
    runner = _runner(clock, {A: "down", B: "down"}, max_retries=3)
    with pytest.raises(TransientInferenceError, match="after 4 attempt"):
        _infer(runner, clock)
    # A, then B at once; then both cool down: one try per back-off (1 s, 2 s), in turn
    assert _calls(runner) == [2, 2]
    assert clock.now == 3.0


def test_one_url_is_the_list_of_one() -> None:
    assert InferenceSettings(triton_grpc_url=A).grpc_urls == [A]
    assert InferenceSettings(triton_grpc_url=A, triton_grpc_urls=[B, C]).grpc_urls == [B, C]
    with pytest.raises(ValueError, match="expected host:port"):
        InferenceSettings(triton_grpc_urls=["triton"])
    with pytest.raises(ValueError, match="each server once"):
        InferenceSettings(triton_grpc_urls=[A, A])


def test_each_kind_of_call_takes_its_own_turn() -> None:
    pool = TritonPool([A, B], cooldown_s=10, clock=FakeClock())
    picks: dict[str, list[int]] = {"segmentation": [], "classification": []}
    for _ in range(2):  # two studies, each: segmentation then classification
        for kind, chosen in picks.items():
            index = pool.acquire(kind=kind)
            chosen.append(index)
            pool.release(index, failed=False)
    assert picks == {"segmentation": [0, 1], "classification": [0, 1]}
