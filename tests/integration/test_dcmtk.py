"""DCMTK's echoscu and storescu as a real modality against the gateway's listener."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import Engine

from gateway.models import Instance, Study
from tests.conftest import GATEWAY_AE, RunningGateway
from tests.integration.conftest import require_tool, spool_path
from tests.integration.dcmtk import association_profile, echoscu, storescu
from tests.integration.dicom_checks import assert_stored_as_sent
from tests.integration.dicom_factory import (
    COMPRESSED_TEST_FILES,
    OTHER_SYNTAX_TEST_FILES,
    ct_series,
    mixed_study,
)
from tests.integration.gateway_db import (
    audit_counts,
    audit_events,
    count_rows,
    instance_rows,
    wait_for_audit,
    wait_for_study_state,
)

MODALITY_AE = "CTSCANNER1"
ONLY_MODALITY = [{"ae_title": MODALITY_AE, "host": "127.0.0.1"}]


@pytest.fixture(autouse=True)
def _dcmtk_installed() -> None:
    require_tool("echoscu")
    require_tool("storescu")


def test_echoscu_c_echo_succeeds_and_is_audited(
    start_custom_gateway: Callable[..., RunningGateway], engine: Engine
) -> None:
    gateway = start_custom_gateway(allowed_peers=ONLY_MODALITY)
    result = echoscu(gateway.port, calling=MODALITY_AE, called=GATEWAY_AE)
    assert result.ok, result.output
    assert "Association Accepted" in result.output
    assert "Received Echo Response (Success)" in result.output
    (accepted,) = wait_for_audit(engine, "association.accepted", 1)
    assert accepted.actor == MODALITY_AE
    assert accepted.source_address == "127.0.0.1"
    assert accepted.detail["contexts"] >= 1


def test_storescu_sends_a_directory_in_many_transfer_syntaxes(
    start_gateway_process: Callable[..., RunningGateway], engine: Engine, tmp_path: Path
) -> None:
    """`storescu +sd +r` on a folder tree: 5 CT slices plus JPEG baseline, JPEG-LS lossless
    and near-lossless, JPEG 2000 lossless, RLE, deflated, big endian and implicit VR files.
    An association profile (-xf) proposes each file's own syntax, so nothing is converted.
    The receiver is the real `pacs-gateway serve` process."""
    gateway = start_gateway_process(allowed_peers=ONLY_MODALITY)
    made = mixed_study(5, COMPRESSED_TEST_FILES + OTHER_SYNTAX_TEST_FILES)
    source = tmp_path / "modality-out"
    for number, instance in enumerate(made):
        instance.write(source / f"series{number % 3}" / "images")
    profile = association_profile(
        tmp_path / "storescu.cfg", {(i.sop_class_uid, i.transfer_syntax_uid) for i in made}
    )

    result = storescu(
        gateway.port,
        [source],
        calling=MODALITY_AE,
        called=GATEWAY_AE,
        extra=("+sd", "+r", *profile),
    )
    assert result.ok, result.output
    assert result.output.count("Received Store Response (Success)") == len(made)
    # storescu logs "Converting transfer syntax: A -> B" per file; A == B means sent as is.
    conversions = [
        line.split("Converting transfer syntax: ", 1)[1].split(" -> ")
        for line in result.output.splitlines()
        if "Converting transfer syntax: " in line
    ]
    assert len(conversions) == len(made)
    assert all(source == target for source, target in conversions), conversions

    rows = instance_rows(engine)
    assert set(rows) == {i.sop_instance_uid for i in made}
    for instance in made:
        row = rows[instance.sop_instance_uid]
        assert row.transfer_syntax_uid == instance.transfer_syntax_uid
        assert row.calling_ae == MODALITY_AE
        assert row.study_instance_uid == instance.study_instance_uid
        assert_stored_as_sent(spool_path(gateway, row.file_path).read_bytes(), instance.data, row)
    assert len({row.transfer_syntax_uid for row in rows.values()}) == 9

    study = wait_for_study_state(engine, made[0].study_instance_uid, "complete")
    assert study.instance_count == len(made)
    counts = audit_counts(engine)
    assert counts["instance.stored"] == len(made)
    assert counts["association.accepted"] == 1  # one association for the whole folder
    assert counts["instance.refused"] == 0


def test_storescu_with_unknown_calling_ae_is_rejected_and_audited(
    start_custom_gateway: Callable[..., RunningGateway], engine: Engine, tmp_path: Path
) -> None:
    gateway = start_custom_gateway(allowed_peers=ONLY_MODALITY)
    files = [instance.write(tmp_path / "in") for instance in ct_series(2)]

    result = storescu(gateway.port, files, calling="UNKNOWN", called=GATEWAY_AE)
    assert not result.ok
    assert "Association Rejected" in result.output
    assert "Calling AE Title Not Recognized" in result.output, result.output

    (rejected,) = wait_for_audit(engine, "association.rejected", 1)
    assert rejected.outcome == "failure"
    assert rejected.actor == "UNKNOWN"
    assert rejected.source_address == "127.0.0.1"
    assert rejected.detail == {"called_ae": GATEWAY_AE, "reason": "calling_ae_not_recognized"}
    assert count_rows(engine, Instance) == 0
    assert count_rows(engine, Study) == 0
    assert audit_events(engine, "association.accepted") == []

    # The configured modality is still served by the same listener.
    allowed = storescu(gateway.port, files, calling=MODALITY_AE, called=GATEWAY_AE)
    assert allowed.ok, allowed.output
    assert count_rows(engine, Instance) == 2


def test_storescu_calling_wrong_called_ae_is_rejected_and_audited(
    start_custom_gateway: Callable[..., RunningGateway], engine: Engine, tmp_path: Path
) -> None:
    gateway = start_custom_gateway(allowed_peers=ONLY_MODALITY)
    files = [instance.write(tmp_path / "in") for instance in ct_series(1)]

    result = storescu(gateway.port, files, calling=MODALITY_AE, called="WRONG")
    assert not result.ok
    assert "Association Rejected" in result.output
    assert "Called AE Title Not Recognized" in result.output, result.output

    (rejected,) = wait_for_audit(engine, "association.rejected", 1)
    assert rejected.actor == MODALITY_AE
    assert rejected.detail == {"called_ae": "WRONG", "reason": "called_ae_not_recognized"}
    assert count_rows(engine, Instance) == 0
