"""The `destinations` table on both databases: seeded from the settings once per name, edits
made in the database survive seeding, secrets round-trip but stay out of audit events, and
a disabled, missing or broken destination is never sent to."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import Engine, select, update

from gateway.delivery.config import DicomDestination, DicomWebDestination
from gateway.delivery.deliverer import Deliverer
from gateway.delivery.registry import (
    InvalidStoredDestination,
    destination_by_name,
    destination_names,
    load_destinations,
    seed_destinations,
    stored_destinations,
)
from gateway.models import AuditEvent, Delivery, DeliveryState, DestinationRecord
from gateway.results.build import ResultObject
from gateway.results.publish import publish_results
from gateway.settings import GatewaySettings
from tests.conftest import free_port, make_settings

SECRET = "s3cret-not-for-logs"
PACS = DicomDestination(name="pacs", ae_title="PACS", host="127.0.0.1", port=104)
WEB = DicomWebDestination.model_validate(
    {"name": "web", "url": "https://pacs.example/dicom-web", "username": "u", "password": SECRET}
)


def audit(engine: Engine, kind: str) -> list[dict[str, object]]:
    with engine.connect() as connection:
        return [
            dict(d or {})
            for d in connection.execute(
                select(AuditEvent.detail).where(AuditEvent.kind == kind).order_by(AuditEvent.id)
            ).scalars()
        ]


def test_seeding_is_idempotent_round_trips_and_keeps_secrets_out_of_audit(
    engine: Engine,
) -> None:
    with engine.begin() as connection:
        assert seed_destinations(connection, [PACS, WEB]) == 2
    with engine.begin() as connection:
        assert seed_destinations(connection, [PACS, WEB]) == 0
        loaded = load_destinations(connection)
    assert loaded == [PACS, WEB]  # by name; SecretStr compares its value
    web = loaded[1]
    assert isinstance(web, DicomWebDestination) and web.password is not None
    assert web.password.get_secret_value() == SECRET
    events = audit(engine, "destination.seeded")
    assert [e["destination"] for e in events] == ["pacs", "web"]
    assert SECRET not in json.dumps(events)


def test_edits_in_the_database_survive_seeding(engine: Engine) -> None:
    with engine.begin() as connection:
        seed_destinations(connection, [PACS, WEB])
        # What the admin UI does: change the port of one, disable the other.
        config = dict(
            connection.execute(
                select(DestinationRecord.config).where(DestinationRecord.name == "pacs")
            ).scalar_one()
        )
        connection.execute(
            update(DestinationRecord)
            .where(DestinationRecord.name == "pacs")
            .values(config={**config, "port": 11112})
        )
        connection.execute(
            update(DestinationRecord).where(DestinationRecord.name == "web").values(enabled=False)
        )
    other = DicomDestination(name="other", ae_title="OTHER", host="127.0.0.1", port=105)
    with engine.begin() as connection:
        assert seed_destinations(connection, [PACS, WEB, other]) == 1
        enabled = load_destinations(connection)
        everything = load_destinations(connection, include_disabled=True)
        assert destination_names(connection) == ["other", "pacs"]
        assert destination_names(connection, include_disabled=True) == ["other", "pacs", "web"]
        stored = destination_by_name(connection, "web")
    assert [d.name for d in enabled] == ["other", "pacs"]
    pacs = next(d for d in everything if d.name == "pacs")
    assert isinstance(pacs, DicomDestination) and pacs.port == 11112
    assert stored is not None and not stored.enabled


def test_an_invalid_stored_destination_is_named_without_its_secret(engine: Engine) -> None:
    with engine.begin() as connection:
        seed_destinations(connection, [WEB])
        connection.execute(
            update(DestinationRecord)
            .where(DestinationRecord.name == "web")
            .values(config={"url": "ftp://nope", "username": None, "password": SECRET})
        )
    with engine.connect() as connection:
        with pytest.raises(InvalidStoredDestination) as caught:
            load_destinations(connection)
        (stored,) = stored_destinations(connection)
    message = str(caught.value)
    assert "destination 'web'" in message and "url" in message and "'ftp://nope'" in message
    assert SECRET not in message
    assert stored.destination is None and stored.problem == message


def _peer_settings(settings: GatewaySettings) -> GatewaySettings:
    return make_settings(
        settings.data_dir,
        settings.sqlalchemy_url,
        destinations=[
            {
                "kind": "dicom",
                "name": "peer",
                "ae_title": "PEER",
                "host": "127.0.0.1",
                "port": free_port(),
            }
        ],
        delivery={"connect_timeout_s": 2, "response_timeout_s": 2, "max_attempts": 3},
    )


def _deliveries(engine: Engine) -> list[Delivery]:
    with engine.connect() as connection:
        return list(connection.execute(select(Delivery.__table__)).all())  # type: ignore[arg-type]


def test_a_disabled_destination_fails_its_deliveries_at_once_with_the_reason(
    settings: GatewaySettings, engine: Engine, small_results: list[ResultObject]
) -> None:
    settings = _peer_settings(settings)
    publish_results(settings, engine, small_results)  # seeds "peer", queues for it
    with engine.begin() as connection:
        connection.execute(update(DestinationRecord).values(enabled=False))
    assert Deliverer(settings, engine).deliver_due() == {DeliveryState.FAILED: 2}
    for row in _deliveries(engine):
        assert row.state == DeliveryState.FAILED and row.attempts == 1
        assert "destination 'peer' is disabled" in (row.last_error or "")
    # A disabled destination is no longer among the defaults: nothing new is queued for it.
    before = len(_deliveries(engine))
    publish_results(settings, engine, small_results)
    assert len(_deliveries(engine)) == before


def test_an_unknown_destination_fails_at_once_and_a_broken_one_is_retried(
    settings: GatewaySettings, engine: Engine, small_results: list[ResultObject]
) -> None:
    settings = _peer_settings(settings)
    publish_results(settings, engine, small_results, destinations=["gone"])
    assert Deliverer(settings, engine).deliver_due() == {DeliveryState.FAILED: 2}
    assert all(
        "expected a destination named 'gone'" in (r.last_error or "") for r in _deliveries(engine)
    )
    with engine.begin() as connection:
        connection.execute(update(DestinationRecord).values(config={"host": "127.0.0.1"}))
    publish_results(settings, engine, small_results)
    assert Deliverer(settings, engine).deliver_due() == {DeliveryState.PENDING: 2}
    pending = [r for r in _deliveries(engine) if r.destination == "peer"]
    assert all("expected a valid destination" in (r.last_error or "") for r in pending)
