"""DICOM over mutual TLS (second listener port) with DCMTK's echoscu/storescu as the client.

The PKI is made with the openssl command line: a CA the gateway trusts (server cert for
127.0.0.1/localhost, client cert), and another CA with a client cert the gateway must refuse.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from gateway.models import Instance
from tests.conftest import GATEWAY_AE, RunningGateway, free_port
from tests.integration.conftest import require_tool, spool_path
from tests.integration.dcmtk import echoscu, storescu, tls_options
from tests.integration.dicom_checks import assert_stored_as_sent
from tests.integration.dicom_factory import MadeInstance, ct_series
from tests.integration.gateway_db import audit_events, count_rows, instance_rows
from tests.integration.tls_pki import Pki, make_pki

MODALITY_AE = "CTSCANNER1"
ONLY_MODALITY = [{"ae_title": MODALITY_AE, "host": "127.0.0.1"}]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    require_tool("openssl")
    require_tool("echoscu")
    require_tool("storescu")
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_gateway(pki: Pki, start_custom_gateway: Callable[..., RunningGateway]) -> RunningGateway:
    return start_custom_gateway(
        allowed_peers=ONLY_MODALITY,
        tls={
            "port": free_port(),
            "cert_file": pki.server.cert,
            "key_file": pki.server.key,
            "ca_file": pki.ca.cert,
        },
    )


def _tls_port(gateway: RunningGateway) -> int:
    port = gateway.settings.dicom.tls.port
    assert port is not None
    return port


def _files(tmp_path: Path, count: int) -> tuple[list[MadeInstance], list[Path]]:
    made = ct_series(count)
    return made, [instance.write(tmp_path / "in") for instance in made]


def test_trusted_client_certificate_echoes_and_stores_over_tls(
    pki: Pki, tls_gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    port = _tls_port(tls_gateway)
    options = tls_options(pki.client, pki.ca.cert)

    echo = echoscu(port, calling=MODALITY_AE, called=GATEWAY_AE, extra=options)
    assert echo.ok, echo.output
    assert "Received Echo Response (Success)" in echo.output

    made, files = _files(tmp_path, 2)
    store = storescu(port, files, calling=MODALITY_AE, called=GATEWAY_AE, extra=options)
    assert store.ok, store.output
    assert store.output.count("Received Store Response (Success)") == 2

    rows = instance_rows(engine)
    assert set(rows) == {i.sop_instance_uid for i in made}
    for instance in made:
        row = rows[instance.sop_instance_uid]
        assert row.calling_ae == MODALITY_AE
        assert_stored_as_sent(
            spool_path(tls_gateway, row.file_path).read_bytes(), instance.data, row
        )
    accepted = audit_events(engine, "association.accepted")
    assert [e.actor for e in accepted] == [MODALITY_AE, MODALITY_AE]


def test_untrusted_clients_fail_and_the_listener_keeps_serving(
    pki: Pki, tls_gateway: RunningGateway, engine: Engine, tmp_path: Path
) -> None:
    port = _tls_port(tls_gateway)
    _made, files = _files(tmp_path, 1)
    refused_options = {
        "TLS without a client certificate": tls_options(None, pki.ca.cert, anonymous=True),
        "client certificate from another CA": tls_options(pki.foreign_client, pki.ca.cert),
        "plain DICOM on the TLS port": (),
    }
    for case, options in refused_options.items():
        result = storescu(port, files, calling=MODALITY_AE, called=GATEWAY_AE, extra=options)
        assert not result.ok, f"{case}: expected a failure, found success:\n{result.output}"
        assert "Association Accepted" not in result.output, case
    assert count_rows(engine, Instance) == 0
    assert audit_events(engine, "association.accepted") == []
    # The client may see the TLS alert before the audit row commits: wait for it briefly.
    deadline = time.monotonic() + 10
    while len(audit_events(engine, "association.rejected")) < len(refused_options):
        assert time.monotonic() < deadline, "expected one audit event per refused client"
        time.sleep(0.05)
    rejected = audit_events(engine, "association.rejected")
    assert len(rejected) == len(refused_options)
    assert {event.detail["reason"] for event in rejected} == {"tls_handshake_failed"}

    # Both listeners still serve: a trusted TLS client, then a plain client.
    good = storescu(
        port,
        files,
        calling=MODALITY_AE,
        called=GATEWAY_AE,
        extra=tls_options(pki.client, pki.ca.cert),
    )
    assert good.ok, good.output
    assert count_rows(engine, Instance) == 1
    plain_made, plain_files = _files(tmp_path / "plain", 1)
    plain = storescu(tls_gateway.port, plain_files, calling=MODALITY_AE, called=GATEWAY_AE)
    assert plain.ok, plain.output
    assert plain_made[0].sop_instance_uid in instance_rows(engine)
    assert count_rows(engine, Instance) == 2


@pytest.fixture
def idle_connection(tls_gateway: RunningGateway) -> Iterator[socket.socket]:
    """A TCP connection to the TLS port that never starts its handshake."""
    sock = socket.create_connection(("127.0.0.1", _tls_port(tls_gateway)), timeout=5)
    yield sock
    sock.close()


def test_stalled_handshake_does_not_block_other_tls_clients(
    pki: Pki, tls_gateway: RunningGateway, idle_connection: socket.socket
) -> None:
    started = time.monotonic()
    echo = echoscu(
        _tls_port(tls_gateway),
        calling=MODALITY_AE,
        called=GATEWAY_AE,
        extra=tls_options(pki.client, pki.ca.cert),
    )
    assert echo.ok, echo.output
    # The handshake deadline is acse_timeout_s (30 s by default): far longer than this.
    assert time.monotonic() - started < 10


def _port_refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except OSError:
        return True


def test_stopping_the_gateway_closes_both_ports(tls_gateway: RunningGateway) -> None:
    tls_port = _tls_port(tls_gateway)
    assert not _port_refuses(tls_port)
    tls_gateway.stop()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not (
        _port_refuses(tls_gateway.port) and _port_refuses(tls_port)
    ):
        time.sleep(0.1)
    assert _port_refuses(tls_gateway.port), "plain port still accepts connections"
    assert _port_refuses(tls_port), "TLS port still accepts connections"


def test_tls_through_several_listener_processes(
    pki: Pki,
    start_gateway_process: Callable[..., RunningGateway],
    engine: Engine,
    tmp_path: Path,
) -> None:
    """The acceptor hands TLS connections to listener processes, which do the handshake."""
    gateway = start_gateway_process(
        allowed_peers=ONLY_MODALITY,
        listener_processes=2,
        tls={
            "port": free_port(),
            "cert_file": pki.server.cert,
            "key_file": pki.server.key,
            "ca_file": pki.ca.cert,
        },
    )
    port = _tls_port(gateway)
    made, files = _files(tmp_path, 3)
    for path in files:  # one association each: both listener processes serve some
        store = storescu(
            port,
            [path],
            calling=MODALITY_AE,
            called=GATEWAY_AE,
            extra=tls_options(pki.client, pki.ca.cert),
        )
        assert store.ok, store.output
    refused = storescu(
        port,
        files[:1],
        calling=MODALITY_AE,
        called=GATEWAY_AE,
        extra=tls_options(pki.foreign_client, pki.ca.cert),
    )
    assert not refused.ok
    assert set(instance_rows(engine)) == {i.sop_instance_uid for i in made}
    deadline = time.monotonic() + 10
    while not audit_events(engine, "association.rejected"):
        assert time.monotonic() < deadline, "expected an audit event for the refused client"
        time.sleep(0.05)
    reasons = [e.detail["reason"] for e in audit_events(engine, "association.rejected")]
    assert reasons == ["tls_handshake_failed"]
