"""SEG and SR delivered to Orthanc by C-STORE and by STOW-RS, then read back from it: same
study, correct references, dciodvfy clean. SQLite and PostgreSQL hold the delivery state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import highdicom as hd
import pytest
from sqlalchemy import Engine

from gateway.delivery.deliverer import Deliverer
from gateway.models import DeliveryState
from gateway.results.publish import publish_results
from gateway.settings import GatewaySettings
from tests.conftest import make_settings
from tests.delivery.conftest import StudyInPacs, audit_kinds, delivery_rows
from tests.integration.dicom_factory import dataset_body
from tests.integration.orthanc import ORTHANC_AE, Orthanc
from tests.results.validation import dciodvfy_errors


def destination_for(kind: str, pacs: Orthanc) -> dict[str, Any]:
    if kind == "dicom":
        return {
            "kind": "dicom",
            "name": "orthanc-dimse",
            "ae_title": ORTHANC_AE,
            "host": "127.0.0.1",
            "port": pacs.dicom_port,
        }
    return {"kind": "dicomweb", "name": "orthanc-web", "url": pacs.dicomweb_url}


@pytest.mark.parametrize("kind", ["dicom", "dicomweb"])
def test_results_delivered_and_read_back_from_orthanc(
    kind: str,
    pacs: Orthanc,
    study_in_pacs: StudyInPacs,
    settings: GatewaySettings,
    engine: Engine,
    tmp_path: Path,
) -> None:
    settings = make_settings(
        settings.data_dir,
        settings.sqlalchemy_url,
        destinations=[destination_for(kind, pacs)],
    )
    stored = publish_results(settings, engine, study_in_pacs.objects)
    rows = delivery_rows(engine)
    assert {state.state for state in rows.values()} == {DeliveryState.PENDING}

    counts = Deliverer(settings, engine).deliver_due()
    assert counts == {DeliveryState.DELIVERED: 2}
    rows = delivery_rows(engine)
    name = settings.destinations[0].name
    for result in stored:
        row = rows[(name, result.kind)]
        assert row.state == DeliveryState.DELIVERED, row.last_error
        assert row.attempts == 1 and row.delivered_at is not None
        assert audit_kinds(engine, result.sop_instance_uid) == [
            "results.stored",
            "delivery.queued",
            "delivery.delivered",
        ]
        # Read back from the PACS: in the source study, valid, as sent.
        orthanc_id = pacs.find_instance(result.sop_instance_uid)
        assert orthanc_id is not None, f"{result.kind} not found in Orthanc"
        parent_series = pacs.get_json(f"/instances/{orthanc_id}")["ParentSeries"]
        parent_study = pacs.get_json(f"/series/{parent_series}")["ParentStudy"]
        assert parent_study == study_in_pacs.orthanc_study_id
        path = tmp_path / f"{result.kind}.dcm"
        path.write_bytes(pacs.instance_file(orthanc_id))
        assert dciodvfy_errors(path)[1] == []
        # The dataset as sent (the PACS writes its own file meta information).
        sent = (settings.results_dir / result.relative_path).read_bytes()
        assert dataset_body(path.read_bytes()) == dataset_body(sent)

    seg_uid = next(r.sop_instance_uid for r in stored if r.kind == "seg")
    sr_path = tmp_path / "sr.dcm"
    sr = hd.sr.srread(sr_path)
    referenced = {
        g.referenced_segment.referenced_sop_instance_uid  # type: ignore[union-attr]
        for g in sr.content.get_volumetric_roi_measurement_groups()
    }
    assert referenced == {seg_uid}
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    assert {item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence} == {
        study_in_pacs.case.findings.series_instance_uid
    }
    # WADO-RS sees the SEG series in the study as well
    study_uid = study_in_pacs.case.findings.study_instance_uid
    metadata = pacs.get_json(
        f"/dicom-web/studies/{study_uid}/series/{seg.SeriesInstanceUID}/metadata"
    )
    assert metadata[0]["00080060"]["Value"] == ["SEG"]

    # A second pass finds nothing due: delivered objects are never sent again.
    assert Deliverer(settings, engine).deliver_due() == {}
    assert publish_results(settings, engine, study_in_pacs.objects)
    assert Deliverer(settings, engine).deliver_due() == {}
