"""The source down: a PACS that does not answer is retried as the settings say, then the run
fails with the reason; a PACS that goes down in the middle of a study (the connection cut
part-way through an instance) is retried, then the study fails with the reason, with no
pulled mark and nothing half-stored: the whole instances that came stay stored like any
received instance, the cut one is nowhere, and the study is not routed until a later run
pulls it whole."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from sqlalchemy import Engine, select

from gateway.jobs.router import StudyRouter
from gateway.models import Job, PullRun
from gateway.pull.criteria import PullCriteria
from gateway.pull.ledger import create_run
from gateway.pull.retrospective import execute_run
from gateway.settings import GatewaySettings
from tests.conftest import GATEWAY_AE, RunningGateway, free_port
from tests.integration.dicom_factory import dataset_body
from tests.pull.conftest import (
    Sent,
    SourcePacs,
    audit_rows,
    complete_all,
    pull_settings,
    pulled_rows,
    source_config,
    stored_files,
    stored_instances,
)
from tests.pull.proxy import CuttingProxy
from tests.pull.studies import SourceStudy

TRANSPORTS = ["c-move", "c-get", "wado-rs"]
RULES = {
    "rules": [{"name": "chest-ct", "conditions": [{"attribute": "modality", "value": "CT"}]}],
    "series_selection": {"min_slices": 2},
}


def at_port(pacs: SourcePacs, transport: str, port: int) -> dict[str, Any]:
    if transport == "wado-rs":
        return source_config(pacs, transport, url=f"http://127.0.0.1:{port}/dicom-web")
    return source_config(pacs, transport, port=port)


def run_study(configured: GatewaySettings, engine: Engine, study: SourceStudy) -> Any:
    criteria = PullCriteria(study_instance_uids=[study.study_instance_uid])
    run_id = create_run(engine, criteria, transport="t", batch_size=1, requested_by="t")
    result = execute_run(configured, engine, run_id)
    assert result is not None
    return result


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_source_that_is_down_is_retried_then_the_run_fails_with_the_reason(
    transport: str,
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    source_studies: dict[str, SourceStudy],
) -> None:
    down = free_port()  # nothing listens there: the PACS is down
    configured = pull_settings(
        settings, at_port(source_pacs, transport, down), max_attempts=3, backoff_initial_s=0.3
    )
    started = time.monotonic()
    result = run_study(configured, engine, source_studies["b"])
    elapsed = time.monotonic() - started

    expected = "no association" if transport != "wado-rs" else "no reply (ConnectionRefusedError"
    assert result.error is not None and expected in result.error, result.error
    assert "(3 attempts)" in result.error
    assert elapsed >= 0.3 + 0.6  # the back-off between the attempts (each takes ~0.1 s)
    retries = audit_rows(engine, "pull.retry")
    assert [(r.detail["attempt"], r.detail["max_attempts"]) for r in retries] == [(1, 3), (2, 3)]
    assert [r.detail["next_in_s"] for r in retries] == [0.3, 0.6]
    assert all(expected in r.detail["reason"] for r in retries)
    (failed,) = audit_rows(engine, "pull.run_failed")
    assert failed.outcome == "failure" and expected in failed.detail["reason"]
    with engine.connect() as connection:
        run = connection.execute(select(PullRun)).one()
    assert (run.state, run.error) == ("failed", result.error)
    assert pulled_rows(engine) == [] and stored_instances(engine) == set()


@pytest.fixture
def cut_midway(
    source_pacs: SourcePacs, listening_gateway: RunningGateway, request: pytest.FixtureRequest
) -> Iterator[tuple[str, CuttingProxy, dict[str, Any]]]:
    """The transport, a proxy that cuts each retrieval ~2.4 instances in, and the source
    settings that go through it. C-MOVE: between Orthanc and the gateway's listener."""
    transport: str = request.param
    if transport == "c-move":
        proxy = CuttingProxy(listening_gateway.port, 80_000, "up")
        source_pacs.point_gateway_at(proxy.port)
        source = source_config(source_pacs, transport)
    else:
        target = source_pacs.http_port if transport == "wado-rs" else source_pacs.dicom_port
        proxy = CuttingProxy(target, 80_000, "down")
        source = at_port(source_pacs, transport, proxy.port)
    yield transport, proxy, source
    proxy.close()
    source_pacs.point_gateway_at(listening_gateway.port)


@pytest.mark.parametrize("cut_midway", TRANSPORTS, indirect=True)
def test_a_source_that_dies_mid_study_leaves_nothing_half_stored(
    cut_midway: tuple[str, CuttingProxy, dict[str, Any]],
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    source_studies: dict[str, SourceStudy],
    listening_gateway: RunningGateway,
) -> None:
    transport, proxy, source = cut_midway
    big = source_studies["big"]
    configured = pull_settings(settings, source, routing=RULES, max_attempts=3)
    result = run_study(configured, engine, big)

    assert (result.pulled, result.failed, result.error) == (0, 1, None)
    assert proxy.cuts == 3  # every attempt was cut
    ((state, attempts, reason, purpose),) = [
        (r.state, r.attempts, r.reason, r.purpose) for r in pulled_rows(engine)
    ]
    assert (state, attempts, purpose) == ("failed", 3, "retrospective")
    assert "(3 attempts)" in reason, reason
    retries = [
        r
        for r in audit_rows(engine, "pull.retry")
        if r.study_instance_uid == big.study_instance_uid
    ]
    assert len(retries) == 2
    (failed,) = audit_rows(engine, "pull.study_failed")
    assert failed.study_instance_uid == big.study_instance_uid and failed.outcome == "failure"

    # What came whole stays stored, byte for byte; the cut instance is nowhere.
    files = stored_files(engine, configured.spool_dir)
    assert 1 <= len(files) < len(big.instances), f"{len(files)} of {len(big.instances)} stored"
    sent = {i.sop_instance_uid: i.data for i in big.instances}
    for uid, data in files.items():
        assert dataset_body(data) == dataset_body(sent[uid]), f"{uid} stored cut short"
    spooled = [p for p in configured.spool_dir.rglob("*") if p.is_file()]
    assert len(spooled) == len(files), sorted(p.name for p in spooled)  # no partial file

    # Not routed while the pull failed: a half study never becomes a job.
    complete_all(engine)
    router = StudyRouter(configured, engine, Sent())
    router.seed()
    assert router.route_complete_studies() == []

    # The source back: a later run pulls it whole, and then it is routed.
    direct = source_config(source_pacs, transport)
    source_pacs.point_gateway_at(listening_gateway.port)
    again = run_study(pull_settings(settings, direct, routing=RULES), engine, big)
    assert (again.pulled, again.failed) == (1, 0)
    assert stored_instances(engine) == big.sop_instance_uids
    complete_all(engine)
    assert len(router.route_complete_studies()) == 1
    with engine.connect() as connection:
        assert connection.execute(select(Job.study_instance_uid)).scalars().all() == [
            big.study_instance_uid
        ]


def test_a_retrieval_the_source_calls_complete_is_not_pulled_if_instances_are_missing(
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    source_studies: dict[str, SourceStudy],
    listening_gateway: RunningGateway,
) -> None:
    """The PACS's entry for our AE points at another Storage SCP (a common mistake): the
    C-MOVE ends with success, but nothing reached the gateway. Only what the gateway holds
    counts: retried, then failed with the reason, no pulled mark."""
    received: list[str] = []

    def on_c_store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000  # "stored", and thrown away

    elsewhere = AE(ae_title=GATEWAY_AE)
    elsewhere.supported_contexts = AllStoragePresentationContexts
    port = free_port()
    server = elsewhere.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_c_store)]
    )
    source_pacs.point_gateway_at(port)
    try:
        b = source_studies["b"]
        configured = pull_settings(settings, source_config(source_pacs, "c-move"), max_attempts=2)
        result = run_study(configured, engine, b)
    finally:
        server.shutdown()
        source_pacs.point_gateway_at(listening_gateway.port)
    assert sorted(received) == sorted([*b.sop_instance_uids] * 2)  # sent elsewhere, twice
    assert (result.pulled, result.failed) == (0, 1)
    ((state, reason),) = [(r.state, r.reason) for r in pulled_rows(engine)]
    assert state == "failed"
    assert reason.startswith(f"3 of 3 instances of study {b.study_instance_uid} not stored"), reason
    assert "the source reported 3 sent" in reason and "(2 attempts)" in reason
    assert stored_instances(engine) == set()
