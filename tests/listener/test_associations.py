"""Who may associate, and the limits on associations."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy import Engine, select

from gateway.models import AuditEvent
from tests.conftest import RunningGateway, make_settings
from tests.db_queries import audit_kinds, instance_rows
from tests.dicom_samples import SECRET_PATIENT_ID, SECRET_PATIENT_NAME, write_series
from tests.scu import association, send_files


def _rejections(engine: Engine) -> list[AuditEvent]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(AuditEvent).where(AuditEvent.kind == "association.rejected")
            ).all()
        )


def test_only_configured_ae_from_its_address_may_associate(
    start_gateway, tmp_path: Path, database_url: str, engine: Engine
) -> None:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        dicom={"allowed_peers": [{"ae_title": "CT1", "host": "127.0.0.1"}]},
    )
    gateway = start_gateway(settings)
    with association(gateway.port, calling_ae="CT1") as assoc:
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
    with association(gateway.port, calling_ae="INTRUDER") as assoc:
        assert assoc.is_rejected
        assert (assoc.acceptor.primitive.result_source, assoc.acceptor.primitive.diagnostic) == (
            1,
            3,
        )
    # The right AE title from another address (127.0.0.2 is a loopback alias)
    with association(gateway.port, calling_ae="CT1", bind_address="127.0.0.2") as assoc:
        assert assoc.is_rejected
    rejected = _rejections(engine)
    assert [(r.actor, r.source_address) for r in rejected] == [
        ("INTRUDER", "127.0.0.1"),
        ("CT1", "127.0.0.2"),
    ]
    assert all(r.detail["reason"] == "calling_ae_not_recognized" for r in rejected)


def test_called_ae_title_is_checked(gateway: RunningGateway, engine: Engine) -> None:
    with association(gateway.port, called_ae="SOMEONEELSE") as assoc:
        assert assoc.is_rejected
        assert assoc.acceptor.primitive.diagnostic == 7  # called AE title not recognized
    assert _rejections(engine)[0].detail["reason"] == "called_ae_not_recognized"


def test_nobody_may_associate_by_default(
    start_gateway, tmp_path: Path, database_url: str, engine: Engine
) -> None:
    settings = make_settings(tmp_path / "data", database_url, dicom={"allowed_peers": []})
    gateway = start_gateway(settings)
    with association(gateway.port) as assoc:
        assert assoc.is_rejected


def test_association_limit(
    start_gateway, tmp_path: Path, database_url: str, engine: Engine
) -> None:
    settings = make_settings(tmp_path / "data", database_url, dicom={"max_associations": 2})
    gateway = start_gateway(settings)
    with association(gateway.port) as first, association(gateway.port) as second:
        assert first.is_established and second.is_established
        with association(gateway.port) as third:
            assert third.is_rejected
            # transient, service-provider (presentation), local limit exceeded
            primitive = third.acceptor.primitive
            assert (primitive.result, primitive.result_source, primitive.diagnostic) == (2, 3, 2)
    with association(gateway.port) as again:
        assert again.is_established


def test_no_patient_identity_in_logs(
    gateway: RunningGateway, engine: Engine, tmp_path: Path, caplog
) -> None:
    caplog.set_level(logging.DEBUG)
    paths = write_series(tmp_path / "series", 2)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(paths[0].read_bytes()[:-500])
    with caplog.at_level(logging.DEBUG):
        assert send_files(gateway.port, [*paths, paths[0], truncated]) == [0, 0, 0, 0xC210]
    assert len(instance_rows(engine)) == 2
    assert audit_kinds(engine)["instance.refused"] == 1
    text = caplog.text
    assert "refused" in text  # the log does say what happened
    for secret in (SECRET_PATIENT_NAME, SECRET_PATIENT_ID, "SECRETPERSON"):
        assert secret not in text
    with engine.connect() as connection:
        details = " ".join(str(row) for row in connection.execute(select(AuditEvent)).all())
    assert SECRET_PATIENT_NAME not in details and SECRET_PATIENT_ID not in details
