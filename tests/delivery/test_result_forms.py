"""Each destination gets the result forms its viewer can show, and only those: a C-STORE PACS
that takes presentation states, secondary captures and key objects, and a STOW-RS archive that
takes every form, both Orthanc. Counted as Orthanc received them (duplicates included), not as
it kept them."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Engine

from gateway.delivery.config import DicomDestination
from gateway.delivery.deliverer import Deliverer
from gateway.delivery.registry import seed_from_settings
from gateway.models import DeliveryState
from gateway.results.build import build_results
from gateway.results.config import ResultsSettings
from gateway.results.forms import ResultForm, kinds_of
from gateway.results.publish import forms_needed, publish_results
from gateway.results.source import read_source_series
from gateway.settings import GatewaySettings
from tests.conftest import make_settings
from tests.delivery.conftest import delivery_rows, store_case_in_pacs
from tests.integration.orthanc import ORTHANC_AE, Orthanc
from tests.results.cases import phantom_case

# What each form is made of, by SOP Class UID.
SOP_CLASSES = {
    "seg": "1.2.840.10008.5.1.4.1.1.66.4",
    "sr": "1.2.840.10008.5.1.4.1.1.88.34",
    "gsps": "1.2.840.10008.5.1.4.1.1.11.1",
    "sc": "1.2.840.10008.5.1.4.1.1.7",
    "ko": "1.2.840.10008.5.1.4.1.1.88.59",
}


def test_forms_default_to_seg_and_sr_and_are_checked() -> None:
    plain = DicomDestination(name="p", ae_title="P", host="h", port=104)
    assert plain.forms == [ResultForm.SEG_SR]
    assert kinds_of(plain.forms) == {"seg", "sr"}
    assert kinds_of(ResultForm) == {"seg", "sr", "gsps", "sc", "ko"}
    twice = DicomDestination(name="p", ae_title="P", host="h", port=104, forms=["sc", "sc"])
    assert twice.forms == [ResultForm.SECONDARY_CAPTURE]
    with pytest.raises(ValueError, match="expected at least one of"):
        DicomDestination(name="p", ae_title="P", host="h", port=104, forms=[])
    with pytest.raises(ValueError, match=r"forms\.0"):
        DicomDestination(name="p", ae_title="P", host="h", port=104, forms=["pdf"])


def test_each_destination_receives_exactly_its_forms(
    pacs: Orthanc, settings: GatewaySettings, engine: Engine, tmp_path: Path
) -> None:
    case = phantom_case(tmp_path / "ct", seed=43, shape=(16, 96, 96), n_nodules=2)
    study_id = store_case_in_pacs(pacs, case)
    study_uid = case.findings.study_instance_uid
    settings = make_settings(
        settings.data_dir,
        settings.sqlalchemy_url,
        destinations=[
            {
                "kind": "dicom",
                "name": "viewer-dimse",
                "ae_title": ORTHANC_AE,
                "host": "127.0.0.1",
                "port": pacs.dicom_port,
                "forms": ["gsps", "sc", "kos"],
            },
            {
                "kind": "dicomweb",
                "name": "archive-web",
                "url": pacs.dicomweb_url,
                "forms": ["seg_sr", "gsps", "sc", "kos"],
            },
        ],
    )
    seed_from_settings(engine, settings.destinations)
    with engine.connect() as connection:
        assert forms_needed(connection, ["viewer-dimse"]) == {
            ResultForm.SEG_SR,  # always built: the gateway's own record
            ResultForm.PRESENTATION_STATE,
            ResultForm.SECONDARY_CAPTURE,
            ResultForm.KEY_OBJECTS,
        }
        forms = forms_needed(connection, ["viewer-dimse", "archive-web"])
    objects = build_results(
        read_source_series(case.paths), case.findings, ResultsSettings(), forms=forms
    )
    built = Counter(o.kind for o in objects)
    # Two nodules: one SC per finding's key image, one of every other object.
    assert built == {"seg": 1, "sr": 1, "gsps": 1, "sc": 2, "ko": 1}
    assert {o.dataset.StudyInstanceUID for o in objects} == {study_uid}

    publish_results(settings, engine, objects)
    counts = Deliverer(settings, engine).deliver_due()
    assert counts == {DeliveryState.DELIVERED: 6 + 4}, delivery_rows(engine)

    results = {o.sop_instance_uid for o in objects}
    rows = [r for r in pacs.received(study_uid, origin=None) if r.sop_instance_uid in results]
    by_dimse = Counter(r.sop_class_uid for r in rows if r.origin == "DicomProtocol")
    by_web = Counter(r.sop_class_uid for r in rows if r.origin != "DicomProtocol")
    assert by_dimse == Counter({SOP_CLASSES["gsps"]: 1, SOP_CLASSES["sc"]: 2, SOP_CLASSES["ko"]: 1})
    assert by_web == Counter(
        {SOP_CLASSES[k]: n for k, n in {"seg": 1, "sr": 1, "gsps": 1, "sc": 2, "ko": 1}.items()}
    )
    # Orthanc filed every object in the source study.
    for obj in objects:
        orthanc_id = pacs.find_instance(obj.sop_instance_uid)
        assert orthanc_id is not None, f"{obj.kind} not in Orthanc"
        series = pacs.get_json(f"/instances/{orthanc_id}")["ParentSeries"]
        assert pacs.get_json(f"/series/{series}")["ParentStudy"] == study_id
    held = len(pacs.study_instances(study_id))
    assert held == len(case.paths) + len(objects)

    # A rerun of the job builds every form again under the same UIDs: nothing new is queued
    # or sent, and the study still holds one copy of each result.
    again = build_results(
        read_source_series(case.paths), case.findings, ResultsSettings(), forms=forms
    )
    assert [(o.kind, o.sop_instance_uid, o.series_instance_uid) for o in again] == [
        (o.kind, o.sop_instance_uid, o.series_instance_uid) for o in objects
    ]
    publish_results(settings, engine, again)
    assert Deliverer(settings, engine).deliver_due() == {}, delivery_rows(engine)
    assert len(pacs.received(study_uid, origin=None)) == len(rows) + len(case.paths)
    assert len(pacs.study_instances(study_id)) == held
