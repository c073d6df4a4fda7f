"""Faults, each with real parts: a worker SIGKILLed mid-inference, Triton stopped for 30 s,
the PACS down, Redis restarted, and 20 studies at once. Each ends with exactly one SEG and
one SR per study at the PACS."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.models import JobState
from tests.conftest import GATEWAY_AE, free_port
from tests.inference.conftest import MODEL_REPOSITORY
from tests.integration.dcmtk import storescu
from tests.integration.orthanc import Orthanc
from tests.pipeline.conftest import Pipeline, orthanc_destination, phantom_study
from tests.pipeline.harness import (
    assert_received_once,
    audit_kinds_of_study,
    deliveries,
    jobs,
    results_in_pacs,
    settled,
    wait_until,
)
from workers.triton_server import TritonServer

MODALITY_AE = "CT_SCANNER"


def send(pipeline: Pipeline, paths: list[Path]) -> str:
    result = storescu(pipeline.settings.dicom.port, paths, calling=MODALITY_AE, called=GATEWAY_AE)
    assert result.ok, result.output[-2000:]
    import pydicom

    return str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)


def wait_settled(pipeline: Pipeline, timeout_s: float, what: str) -> list[Any]:
    """Wait for a positive end, not for time: every job finished, no delivery pending, no
    task left in the broker. Whatever the PACS received by then is all it will receive."""
    try:
        wait_until(lambda: settled(pipeline.engine, pipeline.redis), timeout_s, what)
    except AssertionError:
        states = [(j.id, j.state.value, j.attempts, j.last_error) for j in jobs(pipeline.engine)]
        pytest.fail(f"expected {what} within {timeout_s:g}s; jobs {states}\n{pipeline.logs()}")
    return jobs(pipeline.engine)


def assert_exactly_one_each(pacs: Orthanc, study_uid: str) -> None:
    """One C-STORE of each result received (a second one would not show in what Orthanc
    keeps: same UIDs), and both kept."""
    assert_received_once(pacs, study_uid)
    found = results_in_pacs(pacs, study_uid)
    assert len(found.get("SEG", [])) == 1, found
    assert len(found.get("SR", [])) == 1, found


def test_worker_killed_mid_inference(
    pacs: Orthanc,
    triton: TritonServer,
    start_pipeline: Callable[..., Pipeline],
    tmp_path: Path,
) -> None:
    # Small batches make inference long enough to be caught in the act.
    pipeline = start_pipeline(
        triton.grpc_url, [orthanc_destination(pacs)], inference={"batch_size": 2}
    )
    _, paths = phantom_study(tmp_path / "ct", seed=7201, shape=(96, 512, 512))
    study_uid = send(pipeline, paths)
    job = wait_until(
        lambda: next((j for j in jobs(pipeline.engine) if j.started_at is not None), None),
        60,
        "the job to start",
    )
    assert job.inferred_at is None, "inference finished before the kill: make it slower"
    (child,) = pipeline.workers[0].children()  # concurrency 1: one pool process
    child.send_signal(signal.SIGKILL)
    (job,) = wait_settled(pipeline, 180, "the job run again and delivered")
    assert_exactly_one_each(pacs, study_uid)
    assert job.state == JobState.DELIVERED
    # Run again after the worker was lost (a further attempt may only deliver: the
    # listener's deliverer can hold the deliveries a moment), inferred once in all.
    assert job.attempts >= 2, "expected the task to run again after the worker was lost"
    kinds = audit_kinds_of_study(pipeline.engine, study_uid)
    assert kinds.count("job.inferred") == 1, kinds


def test_triton_stopped_for_30_seconds(
    pacs: Orthanc,
    start_pipeline: Callable[..., Pipeline],
    tmp_path: Path,
) -> None:
    triton = TritonServer(
        MODEL_REPOSITORY,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_path=tmp_path / "triton.log",
    )
    pipeline = start_pipeline(triton.grpc_url, [orthanc_destination(pacs)])
    _, paths = phantom_study(tmp_path / "ct", seed=7301, shape=(24, 256, 256))
    study_uid = send(pipeline, paths)
    down_until = time.monotonic() + 30
    wait_until(
        lambda: any(j.last_error for j in jobs(pipeline.engine)), 30, "a failed inference call"
    )
    while time.monotonic() < down_until:
        (job,) = jobs(pipeline.engine)
        assert job.state in (JobState.RUNNING, JobState.QUEUED), job.state
        time.sleep(1)
    triton.start()
    try:
        (job,) = wait_settled(pipeline, 120, "the job delivered once Triton is back")
    finally:
        triton.stop()
    assert_exactly_one_each(pacs, study_uid)
    assert job.state == JobState.DELIVERED and job.attempts >= 2


def test_pacs_down_then_back(
    start_pipeline: Callable[..., Pipeline],
    triton: TritonServer,
    tmp_path: Path,
) -> None:
    (tmp_path / "pacs").mkdir()
    pacs = Orthanc(tmp_path / "pacs", free_port(), {}, dicom_port=free_port())
    pipeline = start_pipeline(triton.grpc_url, [orthanc_destination(pacs)])
    _, paths = phantom_study(tmp_path / "ct", seed=7401, shape=(24, 256, 256))
    study_uid = send(pipeline, paths)
    wait_until(
        lambda: any(
            j.state == JobState.RESULTS_BUILT and j.last_error for j in jobs(pipeline.engine)
        ),
        60,
        "results built and their delivery failing",
    )
    # Retried while down (not given up after the first refusal).
    wait_until(
        lambda: (rows := deliveries(pipeline.engine)) and min(d.attempts for d in rows) >= 2,
        30,
        "every delivery attempted at least twice",
    )
    pacs.start()
    try:
        (job,) = wait_settled(pipeline, 60, "the job delivered once the PACS is back")
        assert_exactly_one_each(pacs, study_uid)
    finally:
        pacs.stop()
    assert job.state == JobState.DELIVERED


def test_redis_restarted_between_jobs(
    pacs: Orthanc,
    triton: TritonServer,
    start_pipeline: Callable[..., Pipeline],
    tmp_path: Path,
) -> None:
    pipeline = start_pipeline(triton.grpc_url, [orthanc_destination(pacs)], workers=0)
    _, paths = phantom_study(tmp_path / "ct", seed=7501, shape=(16, 128, 128))
    study_uid = send(pipeline, paths)
    wait_until(
        lambda: any(j.enqueued_at is not None for j in jobs(pipeline.engine)),
        30,
        "the job handed to Redis",
    )
    assert pipeline.redis.queued("gateway") == 1
    pipeline.redis.stop()
    pipeline.redis.start()  # same port and directory: the append-only file is replayed
    assert pipeline.redis.queued("gateway") == 1
    pipeline.start_worker()
    (job,) = wait_settled(pipeline, 90, "the job delivered after the Redis restart")
    assert job.state == JobState.DELIVERED
    assert_exactly_one_each(pacs, study_uid)
    # and a job after the restart goes through too
    _, paths = phantom_study(tmp_path / "ct2", seed=7502, shape=(16, 128, 128))
    second = send(pipeline, paths)
    wait_until(lambda: len(jobs(pipeline.engine)) == 2, 30, "a second job")
    finished = wait_settled(pipeline, 90, "the second job delivered")
    assert [j.state for j in finished] == [JobState.DELIVERED] * 2
    assert_exactly_one_each(pacs, second)
    assert_exactly_one_each(pacs, study_uid)


def test_twenty_studies_at_once(
    pacs: Orthanc,
    triton: TritonServer,
    start_pipeline: Callable[..., Pipeline],
    tmp_path: Path,
) -> None:
    pipeline = start_pipeline(triton.grpc_url, [orthanc_destination(pacs)], workers=2)
    studies = [
        phantom_study(tmp_path / f"ct{i}", seed=7600 + i, shape=(12, 128, 128))[1]
        for i in range(20)
    ]
    uids: list[str] = []
    errors: list[BaseException] = []

    def sender(batch: list[list[Path]]) -> None:
        try:
            for paths in batch:
                uids.append(send(pipeline, paths))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(studies[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert len(uids) == 20
    try:
        wait_until(
            lambda: sum(j.state == JobState.DELIVERED for j in jobs(pipeline.engine)) == 20,
            300,
            "20 jobs delivered",
        )
    except AssertionError:
        states = [(j.id, j.state.value, j.last_error) for j in jobs(pipeline.engine)]
        pytest.fail(f"{states}\n{pipeline.logs()}")
    finished = wait_settled(pipeline, 60, "nothing left to run or deliver")
    assert [j.state for j in finished] == [JobState.DELIVERED] * 20
    for uid in uids:
        assert_exactly_one_each(pacs, uid)
