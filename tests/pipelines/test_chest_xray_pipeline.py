"""The chest_xray_nodule pipeline end to end: Orthanc sends two DX studies (a radiograph with
a nodule, one without) to the gateway; a rule routes them to `chest_xray_nodule`; the worker
calls the real Triton; an SR (no SEG) arrives in each study in Orthanc, dciodvfy clean, with
the image-level probability, and for the nodule a circle on the referenced DX image that lies
on the phantom's nodule. Real PostgreSQL, Redis, Triton, Orthanc, Celery worker process."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from gateway.models import JobState
from gateway.phantom.radiograph import Radiograph, make_radiograph
from gateway.phantom.radiograph_dicom import write_radiograph
from gateway.results.reading import reported_image_findings
from gateway.selftest import SELFTEST_AE, SELFTEST_DESTINATION, selftest
from tests.conftest import GATEWAY_AE, free_port
from tests.integration.orthanc import Orthanc
from tests.pipeline import conftest as pipeline_fixtures
from tests.pipeline.conftest import GATEWAY_IN_ORTHANC, Pipeline, orthanc_destination
from tests.pipeline.harness import (
    jobs,
    results_in_pacs,
    results_received,
    settled,
    wait_until,
)
from tests.results.validation import dciodvfy_errors
from workers.triton_server import TritonServer

# The pipeline fixtures of tests/pipeline (PostgreSQL only, a private Redis, Triton, Orthanc).
database_url = pipeline_fixtures.database_url
pacs = pipeline_fixtures.pacs
redis_server = pipeline_fixtures.redis_server
start_pipeline = pipeline_fixtures.start_pipeline
triton = pipeline_fixtures.triton

MARGIN_MM = 5.0
"""A finding is on the nodule when its point lies within the nodule's radius + this."""

CHEST_XRAY_ROUTING = {
    "rules": [
        {
            "name": "chest-dx",
            "conditions": [{"attribute": "modality", "value": "DX"}],
            "pipeline": "chest_xray_nodule",
        }
    ]
}


def _dx_study(tmp: Path, name: str, radiograph: Radiograph) -> Path:
    return write_radiograph(radiograph, tmp / name / "dx.dcm", modality="DX")


def _upload(pacs: Orthanc, path: Path) -> tuple[str, str]:
    study_id = str(pacs.upload(path.read_bytes())["ParentStudy"])
    uid = pacs.get_json(f"/studies/{study_id}")["MainDicomTags"]["StudyInstanceUID"]
    return study_id, str(uid)


def _sr_of(pacs: Orthanc, study_uid: str, tmp: Path) -> hd.sr.Comprehensive3DSR:
    (instance,) = results_in_pacs(pacs, study_uid)["SR"]
    data = pacs.instance_file(instance)
    path = tmp / f"sr-{study_uid}.dcm"
    path.write_bytes(data)
    assert dciodvfy_errors(path)[1] == [], study_uid
    sr = hd.sr.srread(io.BytesIO(data))
    assert sr.StudyInstanceUID == study_uid
    return sr


def _image_finding(sr: hd.sr.Comprehensive3DSR) -> tuple[float, Any]:
    (finding,) = reported_image_findings(sr)
    assert finding.probability is not None
    return finding.probability, codes.SCT.Present if finding.present else codes.SCT.Absent


def test_dx_study_gets_an_sr_with_the_nodule_drawn_on_the_image(
    pacs: Orthanc,
    triton: TritonServer,
    start_pipeline: Callable[..., Pipeline],
    tmp_path: Path,
) -> None:
    pipeline = start_pipeline(
        triton.grpc_url, [orthanc_destination(pacs)], routing=CHEST_XRAY_ROUTING
    )
    positive = make_radiograph(
        15100, view_position="PA", n_nodules=1, nodule_diameter_mm=(16.0, 24.0), long_side_px=1000
    )
    negative = make_radiograph(15106, view_position="AP", n_nodules=0, long_side_px=900)
    assert len(positive.nodules) == 1 and not negative.nodules
    positive_path = _dx_study(tmp_path, "positive", positive)
    negative_path = _dx_study(tmp_path, "negative", negative)
    positive_id, positive_uid = _upload(pacs, positive_path)
    negative_id, negative_uid = _upload(pacs, negative_path)
    pacs.set_modality(GATEWAY_IN_ORTHANC, GATEWAY_AE, "127.0.0.1", pipeline.settings.dicom.port)
    reply = pacs.store(GATEWAY_IN_ORTHANC, [positive_id, negative_id])
    assert reply.status == 200, reply.body[:300]

    try:
        wait_until(
            lambda: all(
                results_in_pacs(pacs, uid).get("SR") for uid in (positive_uid, negative_uid)
            ),
            120,
            "an SR in each DX study in Orthanc",
        )
    except AssertionError:
        pytest.fail(f"no results; jobs {jobs(pipeline.engine)}\n{pipeline.logs()}")
    wait_until(lambda: settled(pipeline.engine, pipeline.redis), 30, "nothing left to deliver")
    for uid in (positive_uid, negative_uid):
        # an SR only (no SEG), received once
        assert results_received(pacs, uid) == {"SR": 1}, dict(results_received(pacs, uid))
    finished = jobs(pipeline.engine)
    assert [j.pipeline for j in finished] == ["chest_xray_nodule"] * 2
    assert all(j.state == JobState.DELIVERED and j.attempts == 1 for j in finished), finished

    # The nodule: present, with a circle on the referenced DX image over the true nodule.
    dx = pydicom.dcmread(positive_path, stop_before_pixels=True)
    sr = _sr_of(pacs, positive_uid, tmp_path)
    probability, evaluation = _image_finding(sr)
    assert probability >= 0.5 and evaluation == codes.SCT.Present, (probability, evaluation)
    groups = sr.content.get_planar_roi_measurement_groups()
    assert groups, "expected a planar region per localised finding, found none"
    (truth,) = positive.nodules
    spacing = positive.geometry.spacing_mm
    distances = []
    for group in groups:
        region = group.roi
        assert region is not None and region.graphic_type == hd.sr.GraphicTypeValues.CIRCLE
        (source,) = region.ContentSequence[0].ReferencedSOPSequence
        assert source.ReferencedSOPInstanceUID == dx.SOPInstanceUID
        assert source.ReferencedSOPClassUID == dx.SOPClassUID
        assert group.finding_type == codes.SCT.Nodule
        centre = np.asarray(region.value[0], dtype=float)  # (column, row), 0 at the pixel corner
        column, row = centre[0] - 0.5, centre[1] - 0.5
        distances.append(float(np.hypot(row - truth.row, column - truth.column)) * spacing)
    limit = truth.radius_px * spacing + MARGIN_MM
    assert min(distances) <= limit, (distances, limit, truth)

    # No nodule: absent, and no region.
    sr = _sr_of(pacs, negative_uid, tmp_path)
    probability, evaluation = _image_finding(sr)
    assert probability < 0.5 and evaluation == codes.SCT.Absent, (probability, evaluation)
    assert sr.content.get_planar_roi_measurement_groups() == []


def test_selftest_sends_a_radiograph_and_checks_its_sr(
    triton: TritonServer, start_pipeline: Callable[..., Pipeline]
) -> None:
    destination = {
        "kind": "dicom",
        "name": SELFTEST_DESTINATION,
        "ae_title": SELFTEST_AE,
        "host": "127.0.0.1",
        "port": free_port(),
    }
    pipeline = start_pipeline(triton.grpc_url, [destination], routing=CHEST_XRAY_ROUTING)
    try:
        report = selftest(pipeline.settings, timeout_s=90, modality="DX")
    except Exception:
        pytest.fail(f"selftest failed; jobs {jobs(pipeline.engine)}\n{pipeline.logs()}")
    assert report[0].endswith("1 DX image sent"), report
    assert "region(s) on the radiograph" in report[1], report
    (job,) = jobs(pipeline.engine)
    assert job.pipeline == "chest_xray_nodule" and job.state == JobState.DELIVERED, job
