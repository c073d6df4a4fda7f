"""The chest_xray_nodule results without the network: a CR radiograph (MONOCHROME1,
PixelSpacing) through the real model (onnxruntime in process) into an SR that dciodvfy
accepts, whose circle lies on the phantom's nodule; findings saved and loaded again (a job
rerun) rebuild the same SR under the same derived UIDs; the description's checks."""

from __future__ import annotations

import tomllib
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydantic import ValidationError

from gateway.inference_config import InferenceSettings
from gateway.phantom.radiograph import make_radiograph
from gateway.phantom.radiograph_dicom import write_radiograph
from gateway.pipelines.chest_xray_nodule import DESCRIPTION_FILE
from gateway.pipelines.chest_xray_nodule import pipeline as chest_xray_pipeline
from gateway.pipelines.description import PipelineDescription
from gateway.results.build import build_results
from gateway.results.config import ResultsSettings
from gateway.results.identity import ResultUIDs
from gateway.results.reading import reported_image_findings
from tests.inference.conftest import MODEL_REPOSITORY
from tests.results.ohif_rules import ohif_measurements
from tests.results.pixelmed import (
    ours,
    outside_measurement_groups,
    sr_copies_by_template,
    sr_validator_messages_many,
)
from tests.results.validation import dciodvfy_errors
from workers.inference.radiograph import RadiographAnalyser
from workers.jobs.findings_store import load_findings, save_findings

MARGIN_MM = 5.0


def _circle_centres(sr: hd.sr.Comprehensive3DSR) -> list[tuple[float, float, str]]:
    """(row, column) of each circle's centre (0 = first pixel's centre) and its image."""
    centres = []
    for group in sr.content.get_planar_roi_measurement_groups():
        region = group.roi
        assert region.graphic_type == hd.sr.GraphicTypeValues.CIRCLE
        (source,) = region.ContentSequence[0].ReferencedSOPSequence
        x, y = np.asarray(region.value[0], dtype=float)
        centres.append((y - 0.5, x - 0.5, str(source.ReferencedSOPInstanceUID)))
    return centres


def test_cr_radiograph_sr_is_valid_on_the_nodule_and_rebuilt_the_same(tmp_path: Path) -> None:
    description = chest_xray_pipeline().description
    rad = make_radiograph(
        15103,
        photometric="MONOCHROME1",
        n_nodules=1,
        nodule_diameter_mm=(16.0, 24.0),
        long_side_px=900,
    )
    path = write_radiograph(rad, tmp_path / "cr.dcm", modality="CR")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert header.Modality == "CR" and header.PhotometricInterpretation == "MONOCHROME1"
    settings = InferenceSettings(runner="onnxruntime", model_repository=MODEL_REPOSITORY)
    analyser = RadiographAnalyser(settings, description)
    try:
        findings = analyser.analyse_files([path])
    finally:
        analyser.close()
    (image,) = findings.image_findings
    assert image.present and image.probability >= 0.5, image
    assert findings.point_findings, "expected a localised finding, found none"

    uids = ResultUIDs.for_findings(findings, pipeline="chest_xray_nodule#1")
    (sr_object,) = build_results([header], findings, ResultsSettings(), uids, description)
    assert sr_object.kind == "sr"
    sr_path = tmp_path / "sr.dcm"
    sr_object.dataset.save_as(sr_path, enforce_file_format=True)
    assert dciodvfy_errors(sr_path)[1] == []
    sr = hd.sr.srread(sr_path)
    _assert_pixelmed_and_ohif_accept(sr_path, str(header.SOPInstanceUID), tmp_path)
    (reported,) = reported_image_findings(sr)
    assert reported.present and reported.probability == pytest.approx(image.probability, abs=1e-4)
    (truth,) = rad.nodules
    spacing = rad.geometry.spacing_mm
    centres = _circle_centres(sr)
    assert all(uid == header.SOPInstanceUID for _, _, uid in centres), centres
    nearest = min(np.hypot(r - truth.row, c - truth.column) * spacing for r, c, _ in centres)
    assert nearest <= truth.radius_px * spacing + MARGIN_MM, (centres, truth)

    # A rerun after a worker was lost loads the saved findings: same objects, same UIDs.
    save_findings(findings, tmp_path / "job" / "findings.npz")
    loaded = load_findings(tmp_path / "job" / "findings.npz")
    assert loaded.point_findings == findings.point_findings
    (again,) = build_results([header], loaded, ResultsSettings(), uids, description)
    assert again.sop_instance_uid == sr_object.sop_instance_uid
    assert again.series_instance_uid == sr_object.series_instance_uid
    rebuilt = hd.sr.srread(_saved(again.dataset, tmp_path / "again.dcm"))
    tracking = [g.tracking_uid for g in rebuilt.content.get_planar_roi_measurement_groups()]
    assert tracking == [g.tracking_uid for g in sr.content.get_planar_roi_measurement_groups()]
    assert _circle_centres(rebuilt) == centres


def _assert_pixelmed_and_ohif_accept(sr_path: Path, image_uid: str, tmp_path: Path) -> None:
    """PixelMed: nothing of ours in the report, nor in each TID 1410 group on its own (it
    checks several TID 1410 groups as TID 1501; tests/results/pixelmed.py). OHIF: each
    finding one measurement drawn on the radiograph, labelled with its probability."""
    copies = sr_copies_by_template(sr_path, tmp_path / "copies")
    messages = sr_validator_messages_many([sr_path, *copies.values()])
    assert ours(outside_measurement_groups(sr_path, messages[sr_path])) == []
    assert {name: ours(messages[p]) for name, p in copies.items()} == {n: [] for n in copies}
    assert copies and all(name.startswith("tid1410-") for name in copies)
    measurements = ohif_measurements(pydicom.dcmread(sr_path))
    assert len(measurements) == len(copies)
    for m in measurements:
        assert m.problems == [] and m.tid1410_style
        assert m.labels == ["Probability"] and m.first_image_uid == image_uid


def _saved(dataset: pydicom.Dataset, path: Path) -> Path:
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_description_checks_name_the_field(tmp_path: Path) -> None:
    data = tomllib.loads(DESCRIPTION_FILE.read_text())
    volume = {**data, "accepts": {**data["accepts"], "geometry": "volume", "view_positions": []}}
    volume["accepts"]["max_slices"] = 10
    with pytest.raises(ValidationError, match=r"localisation: expected accepts\.geometry 'image'"):
        PipelineDescription.model_validate(volume)
    # the analyser holds the model card's contract: another grid spacing is refused
    models = [dict(m) for m in data["models"]]
    models[0]["preprocess"] = {**models[0]["preprocess"], "spacing_mm": 1.5}
    other = PipelineDescription.model_validate({**data, "models": models})
    settings = InferenceSettings(runner="onnxruntime", model_repository=MODEL_REPOSITORY)
    with pytest.raises(ValueError, match=r"expected preprocess .* found .*1\.5"):
        RadiographAnalyser(settings, other)
