"""A real PACS (Orthanc) sends a study to the gateway by C-STORE, driven over its REST API.

Orthanc holds 10 CT instances (Explicit VR Little Endian) and one instance each in JPEG
baseline, JPEG-LS lossless and near-lossless, JPEG 2000 lossless and RLE. The gateway accepts
every one of those transfer syntaxes, so Orthanc sends each instance in its stored syntax
(no transcoding; the tests check the recorded syntax is the original one) and the stored
dataset bytes equal Orthanc's file after its meta header. (Orthanc, being DCMTK, would drop a
trailing (FFFC,FFFC) padding element and turn encapsulated Pixel Data's VR OW into OB on the
wire; dicom_factory normalises the pydicom test files that way so the comparison is exact.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from gateway.models import Instance, Series, Study
from tests.conftest import GATEWAY_AE, RunningGateway
from tests.integration.conftest import GATEWAY_MODALITY, OrthancStudy, spool_path
from tests.integration.dicom_checks import assert_stored_as_sent
from tests.integration.gateway_db import (
    audit_counts,
    audit_events,
    count_rows,
    instance_rows,
    series_rows,
    wait_for_audit,
    wait_for_study_state,
)
from tests.integration.orthanc import ORTHANC_AE, Orthanc

ORTHANC_ONLY = [{"ae_title": ORTHANC_AE, "host": "127.0.0.1"}]


def _send(orthanc: Orthanc, gateway: RunningGateway, study: OrthancStudy) -> dict[str, Any]:
    orthanc.set_modality(GATEWAY_MODALITY, GATEWAY_AE, "127.0.0.1", gateway.port)
    reply = orthanc.store(GATEWAY_MODALITY, [study.orthanc_id])
    assert reply.status == 200, f"expected Orthanc's store to succeed, found {reply.body!r}"
    answer: dict[str, Any] = reply.json()
    assert answer["FailedInstancesCount"] == 0
    assert answer["InstancesCount"] == len(study.instances)
    assert answer["RemoteAet"] == GATEWAY_AE
    return answer


def test_study_from_orthanc_is_stored_indexed_and_completed(
    orthanc: Orthanc,
    orthanc_study: OrthancStudy,
    start_custom_gateway: Callable[..., RunningGateway],
    engine: Engine,
) -> None:
    gateway = start_custom_gateway(allowed_peers=ORTHANC_ONLY)
    _send(orthanc, gateway, orthanc_study)

    # Rows: exactly the study's instances, each with its original transfer syntax.
    rows = instance_rows(engine)
    assert set(rows) == set(orthanc_study.instances)
    syntaxes = set()
    for sop_uid, sent in orthanc_study.instances.items():
        row = rows[sop_uid]
        assert row.study_instance_uid == orthanc_study.study_instance_uid
        assert row.series_instance_uid == sent.series_instance_uid
        assert row.sop_class_uid == sent.sop_class_uid
        assert row.transfer_syntax_uid == sent.transfer_syntax_uid, "Orthanc transcoded"
        assert row.calling_ae == ORTHANC_AE
        path = spool_path(gateway, row.file_path)
        assert path.is_file(), f"expected spool file {path}, found none"
        stored = path.read_bytes()
        assert row.size_bytes == len(stored)
        orthanc_file = orthanc.instance_file(orthanc_study.orthanc_instance_ids[sop_uid])
        assert_stored_as_sent(stored, orthanc_file, row)
        assert orthanc_file == sent.data  # Orthanc kept our upload as it was
        syntaxes.add(row.transfer_syntax_uid)
    assert syntaxes == {
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.90",
        "1.2.840.10008.1.2.5",
    }

    series = series_rows(engine)
    expected_series = {i.series_instance_uid for i in orthanc_study.instances.values()}
    assert set(series) == expected_series
    for series_uid, row in series.items():
        expected = sum(
            1 for i in orthanc_study.instances.values() if i.series_instance_uid == series_uid
        )
        assert row.instance_count == expected
    ct_series = [row for row in series.values() if row.instance_count == 10]
    assert len(ct_series) == 1 and ct_series[0].modality == "CT"
    assert ct_series[0].body_part_examined == "CHEST"

    # Completion after the quiet period (1 s in the test settings), recorded once.
    study = wait_for_study_state(engine, orthanc_study.study_instance_uid, "complete")
    assert study.instance_count == len(orthanc_study.instances)
    assert study.first_calling_ae == ORTHANC_AE
    assert study.completion_count == 1
    assert count_rows(engine, Study) == 1

    complete = wait_for_audit(engine, "study.complete", 1)
    assert complete[0].study_instance_uid == orthanc_study.study_instance_uid
    assert complete[0].detail["instances"] == len(orthanc_study.instances)
    accepted = audit_events(engine, "association.accepted")
    assert accepted and all(e.actor == ORTHANC_AE for e in accepted)
    assert all(e.source_address == "127.0.0.1" for e in accepted)
    stored_events = audit_events(engine, "instance.stored")
    assert sorted(e.sop_instance_uid for e in stored_events) == sorted(orthanc_study.instances)
    counts = audit_counts(engine)
    assert counts["instance.duplicate"] == 0
    assert counts["instance.refused"] == 0
    assert counts["association.rejected"] == 0


def test_second_send_of_same_study_is_idempotent(
    orthanc: Orthanc,
    orthanc_study: OrthancStudy,
    start_custom_gateway: Callable[..., RunningGateway],
    engine: Engine,
) -> None:
    gateway = start_custom_gateway(allowed_peers=ORTHANC_ONLY)
    total = len(orthanc_study.instances)
    _send(orthanc, gateway, orthanc_study)
    wait_for_study_state(engine, orthanc_study.study_instance_uid, "complete")
    first_rows = instance_rows(engine)
    files_before = sorted(p for p in gateway.settings.spool_dir.rglob("*") if p.is_file())
    assert len(files_before) == total

    _send(orthanc, gateway, orthanc_study)  # Orthanc reports success for every instance
    duplicates = wait_for_audit(engine, "instance.duplicate", total)
    assert sorted(e.sop_instance_uid for e in duplicates) == sorted(orthanc_study.instances)
    assert all(e.actor == ORTHANC_AE for e in duplicates)

    assert instance_rows(engine) == first_rows  # same rows, same files
    assert count_rows(engine, Instance) == total
    assert count_rows(engine, Series) == len({r.series_instance_uid for r in first_rows.values()})
    assert count_rows(engine, Study) == 1
    files_after = sorted(p for p in gateway.settings.spool_dir.rglob("*") if p.is_file())
    assert files_after == files_before  # no second copy, no leftover temporary file
    study = wait_for_study_state(engine, orthanc_study.study_instance_uid, "complete")
    assert study.instance_count == total  # duplicates neither count nor reopen the study
    assert study.completion_count == 1
    counts = audit_counts(engine)
    assert counts["instance.stored"] == total
    assert counts["instance.duplicate"] == total
    assert counts["study.updated"] == 0
    assert counts["study.complete"] == 1


def test_orthanc_calling_wrong_called_ae_is_rejected_and_audited(
    orthanc: Orthanc,
    orthanc_study: OrthancStudy,
    start_custom_gateway: Callable[..., RunningGateway],
    engine: Engine,
) -> None:
    gateway = start_custom_gateway(allowed_peers=ORTHANC_ONLY)
    orthanc.set_modality("GATEWAYWRONGAET", "NOTTHEGATEWAY", "127.0.0.1", gateway.port)
    reply = orthanc.store("GATEWAYWRONGAET", [orthanc_study.orthanc_id])
    assert reply.status != 200
    assert "Association Rejected" in reply.json().get("Details", "")

    (rejected,) = wait_for_audit(engine, "association.rejected", 1)
    assert rejected.outcome == "failure"
    assert rejected.actor == ORTHANC_AE
    assert rejected.source_address == "127.0.0.1"
    assert rejected.detail == {"called_ae": "NOTTHEGATEWAY", "reason": "called_ae_not_recognized"}
    assert count_rows(engine, Instance) == 0
    assert audit_counts(engine)["association.accepted"] == 0

    _send(orthanc, gateway, orthanc_study)  # the listener still serves the right AE title
    assert count_rows(engine, Instance) == len(orthanc_study.instances)


def test_orthanc_not_among_allowed_peers_is_rejected_and_audited(
    orthanc: Orthanc,
    orthanc_study: OrthancStudy,
    start_custom_gateway: Callable[..., RunningGateway],
    engine: Engine,
) -> None:
    gateway = start_custom_gateway(allowed_peers=[{"ae_title": "CTSCANNER1", "host": "127.0.0.1"}])
    orthanc.set_modality(GATEWAY_MODALITY, GATEWAY_AE, "127.0.0.1", gateway.port)
    reply = orthanc.store(GATEWAY_MODALITY, [orthanc_study.orthanc_id])
    assert reply.status != 200
    assert "Association Rejected" in reply.json().get("Details", "")

    (rejected,) = wait_for_audit(engine, "association.rejected", 1)
    assert rejected.outcome == "failure"
    assert rejected.actor == ORTHANC_AE
    assert rejected.detail == {"called_ae": GATEWAY_AE, "reason": "calling_ae_not_recognized"}
    assert count_rows(engine, Instance) == 0
    assert count_rows(engine, Study) == 0
    assert list(gateway.settings.spool_dir.rglob("*.dcm")) == []
