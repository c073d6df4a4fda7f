"""Scripted bad destinations: each failure is classified (transient: retried with back-off;
permanent: failed at once), never reported as success, and audited."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, update

from gateway.audit import utcnow
from gateway.delivery.deliverer import Deliverer
from gateway.models import Delivery, DeliveryState
from gateway.results.build import ResultObject
from gateway.results.publish import publish_results
from gateway.settings import GatewaySettings
from tests.conftest import free_port, make_settings
from tests.delivery.conftest import audit_kinds, delivery_rows
from tests.delivery.scripted_peers import scripted_storage_scp, scripted_stow_server

pytestmark = pytest.mark.usefixtures("engine")


def settings_with(
    settings: GatewaySettings, destination: dict[str, Any], **delivery: Any
) -> GatewaySettings:
    return make_settings(
        settings.data_dir,
        settings.sqlalchemy_url,
        destinations=[{"name": "peer", **destination}],
        delivery={
            "connect_timeout_s": 3,
            "response_timeout_s": 3,
            "backoff_initial_s": 60,
            "max_attempts": 3,
            **delivery,
        },
    )


def dicom_peer(port: int, ae_title: str = "SCRIPTED") -> dict[str, Any]:
    return {"kind": "dicom", "ae_title": ae_title, "host": "127.0.0.1", "port": port}


def make_due(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(update(Delivery).values(next_attempt_at=utcnow()))


def test_rejected_sop_class_fails_at_once_and_the_rest_is_delivered(
    settings: GatewaySettings, engine: Engine, small_results: list[ResultObject]
) -> None:
    with scripted_storage_scp(accept_seg=False) as peer:
        settings = settings_with(settings, dicom_peer(peer.port))
        publish_results(settings, engine, small_results)
        counts = Deliverer(settings, engine).deliver_due()
    assert counts == {DeliveryState.DELIVERED: 1, DeliveryState.FAILED: 1}
    rows = delivery_rows(engine)
    seg, sr = rows[("peer", "seg")], rows[("peer", "sr")]
    assert seg.state == DeliveryState.FAILED and seg.attempts == 1
    assert "rejected the presentation context for Segmentation Storage" in (seg.last_error or "")
    assert sr.state == DeliveryState.DELIVERED
    assert peer.received == [sr.sop_instance_uid]
    assert audit_kinds(engine, seg.sop_instance_uid)[-1] == "delivery.failed"


def test_out_of_resources_is_retried_with_backoff_then_failed(
    settings: GatewaySettings, engine: Engine, small_results: list[ResultObject]
) -> None:
    with scripted_storage_scp(status=0xA700) as peer:
        settings = settings_with(settings, dicom_peer(peer.port))
        publish_results(settings, engine, small_results)
        deliverer = Deliverer(settings, engine)
        before = utcnow()
        assert deliverer.deliver_due() == {DeliveryState.PENDING: 2}
        rows = delivery_rows(engine)
        for row in rows.values():
            assert row.attempts == 1 and "status 0xA700" in (row.last_error or "")
            next_at = row.next_attempt_at.replace(tzinfo=before.tzinfo)
            assert next_at >= before + timedelta(seconds=59)  # backoff_initial_s
        assert deliverer.deliver_due() == {}  # not due yet: nothing is sent
        assert len(peer.received) == 2
        make_due(engine)
        assert deliverer.deliver_due() == {DeliveryState.PENDING: 2}
        make_due(engine)
        assert deliverer.deliver_due() == {DeliveryState.FAILED: 2}  # max_attempts 3
    rows = delivery_rows(engine)
    for row in rows.values():
        assert row.state == DeliveryState.FAILED and row.attempts == 3
        assert "gave up after 3 attempts" in (row.last_error or "")
        assert audit_kinds(engine, row.sop_instance_uid)[-3:] == [
            "delivery.retry",
            "delivery.retry",
            "delivery.failed",
        ]


def test_a_hanging_destination_times_out_and_is_retried(
    settings: GatewaySettings, engine: Engine, small_results: list[ResultObject]
) -> None:
    with scripted_storage_scp(hang_s=6) as peer:
        settings = settings_with(settings, dicom_peer(peer.port), response_timeout_s=1.5)
        publish_results(settings, engine, small_results)
        started = time.monotonic()
        counts = Deliverer(settings, engine).deliver_due()
        elapsed = time.monotonic() - started
    assert counts == {DeliveryState.PENDING: 2}
    assert elapsed < 10, f"expected the send to give up after its timeout, took {elapsed:.1f}s"
    rows = delivery_rows(engine)
    reasons = sorted(row.last_error or "" for row in rows.values())
    assert any("no C-STORE response within 1.5 s" in r for r in reasons), reasons
    assert all(
        row.state == DeliveryState.PENDING and row.delivered_at is None for row in rows.values()
    )


def test_unknown_called_ae_is_a_permanent_failure(
    settings: GatewaySettings, engine: Engine, small_results: list[ResultObject]
) -> None:
    with scripted_storage_scp(ae_title="SCRIPTED") as peer:
        settings = settings_with(settings, dicom_peer(peer.port, ae_title="NOSUCHAE"))
        publish_results(settings, engine, small_results)
        assert Deliverer(settings, engine).deliver_due() == {DeliveryState.FAILED: 2}
        assert peer.received == []
    for row in delivery_rows(engine).values():
        assert "rejected the association permanently" in (row.last_error or "")
        assert "Called AE title not recognised" in (row.last_error or "")


def test_nobody_listening_is_transient(
    settings: GatewaySettings, engine: Engine, small_results: list[ResultObject]
) -> None:
    settings = settings_with(settings, dicom_peer(free_port()))
    publish_results(settings, engine, small_results)
    assert Deliverer(settings, engine).deliver_due() == {DeliveryState.PENDING: 2}
    for row in delivery_rows(engine).values():
        assert "no association" in (row.last_error or "")


def test_missing_result_file_is_a_permanent_failure(
    settings: GatewaySettings, engine: Engine, small_results: list[ResultObject]
) -> None:
    with scripted_storage_scp() as peer:
        settings = settings_with(settings, dicom_peer(peer.port))
        stored = publish_results(settings, engine, small_results)
        (settings.results_dir / stored[0].relative_path).unlink()
        counts = Deliverer(settings, engine).deliver_due()
    assert counts == {DeliveryState.FAILED: 1, DeliveryState.DELIVERED: 1}
    assert peer.received == [stored[1].sop_instance_uid]


def _stow_reply(objects: list[ResultObject], failed_reason: int | None) -> dict[str, Any]:
    def item(obj: ResultObject) -> dict[str, Any]:
        return {
            "00081150": {"vr": "UI", "Value": [obj.sop_class_uid]},
            "00081155": {"vr": "UI", "Value": [obj.sop_instance_uid]},
        }

    if failed_reason is None:
        return {"00081199": {"vr": "SQ", "Value": [item(o) for o in objects]}}
    failed = [{**item(o), "00081197": {"vr": "US", "Value": [failed_reason]}} for o in objects]
    return {"00081198": {"vr": "SQ", "Value": failed}}


@pytest.mark.parametrize(
    ("http_status", "reply", "expected_state", "expected_reason"),
    [
        (200, "failed:0xC000", DeliveryState.FAILED, "status 0xC000"),
        (202, "failed:0xA700", DeliveryState.PENDING, "status 0xA700"),
        (200, "empty", DeliveryState.PENDING, "not confirmed"),
        (200, "not-json", DeliveryState.PENDING, "without a readable DICOM JSON"),
        (503, "empty", DeliveryState.PENDING, "HTTP 503"),
        (401, "empty", DeliveryState.FAILED, "HTTP 401"),
        (200, "stored", DeliveryState.DELIVERED, None),
    ],
)
def test_stow_success_is_read_from_the_response_body(
    http_status: int,
    reply: str,
    expected_state: DeliveryState,
    expected_reason: str | None,
    settings: GatewaySettings,
    engine: Engine,
    small_results: list[ResultObject],
    tmp_path: Path,
) -> None:
    body: Any
    if reply.startswith("failed:"):
        body = _stow_reply(small_results, int(reply.split(":")[1], 16))
    elif reply == "stored":
        body = _stow_reply(small_results, None)
    elif reply == "not-json":
        body = b"<html>OK</html>"
    else:
        body = {}
    with scripted_stow_server(http_status, body) as server:
        settings = settings_with(
            settings,
            {"kind": "dicomweb", "url": server.url, "username": "gw", "password": "secret"},
        )
        publish_results(settings, engine, small_results)
        counts = Deliverer(settings, engine).deliver_due()
    assert counts == {expected_state: 2}
    assert len(server.requests) == 1  # one POST for the batch
    assert all(o.sop_instance_uid.encode() in server.requests[0] for o in small_results)
    for row in delivery_rows(engine).values():
        assert row.state == expected_state
        if expected_reason:
            assert expected_reason in (row.last_error or ""), row.last_error


def test_destination_down_then_back_is_delivered_by_the_retry_loop(
    settings: GatewaySettings, engine: Engine, small_results: list[ResultObject]
) -> None:
    port = free_port()
    settings = settings_with(
        settings,
        dicom_peer(port),
        backoff_initial_s=0.5,
        backoff_multiplier=1.0,
        poll_interval_s=0.2,
        max_attempts=100,
    )
    publish_results(settings, engine, small_results)
    stop = threading.Event()
    loop = threading.Thread(target=Deliverer(settings, engine).run, args=(stop,), daemon=True)
    loop.start()
    try:
        deadline = time.monotonic() + 20
        while not all(r.attempts >= 2 for r in delivery_rows(engine).values()):
            assert time.monotonic() < deadline, "expected retries while the destination is down"
            time.sleep(0.1)
        assert {r.state for r in delivery_rows(engine).values()} == {DeliveryState.PENDING}
        with scripted_storage_scp(port=port) as peer:
            deadline = time.monotonic() + 20
            while {r.state for r in delivery_rows(engine).values()} != {DeliveryState.DELIVERED}:
                assert time.monotonic() < deadline, "expected delivery once it is back"
                time.sleep(0.1)
            assert sorted(peer.received) == sorted(o.sop_instance_uid for o in small_results)
    finally:
        stop.set()
        loop.join(timeout=10)
