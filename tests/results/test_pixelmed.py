"""PixelMed's checkers (DicomSRValidator, DicomInstanceValidator) and dciodvfy on the SEG and
SR of every test geometry, and the control: objects written by highdicom alone, as its docs
show, that draw the messages we list as PixelMed's own faults (tests/results/pixelmed.py,
docs/results.md "PixelMed's messages")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr import _cid_dict
from pydicom.sr.codedict import codes

from gateway.pipelines.chest_xray_nodule import pipeline as chest_xray_pipeline
from gateway.pipelines.lung_nodules import pipeline as lung_nodules_pipeline
from gateway.results.build import build_results, store_results
from gateway.results.source import read_source_series
from tests.results.cases import phantom_case
from tests.results.pixelmed import (
    KNOWN_PIXELMED_FAULTS,
    UNRECOGNIZED_IOD,
    group_templates,
    instance_validator_errors_many,
    normalised,
    ours,
    outside_measurement_groups,
    pixelmed_outputs,
    sr_copies_by_template,
    sr_validator_messages_many,
)
from tests.results.test_results_objects import CASES, SETTINGS, make_case
from tests.results.validation import dciodvfy_errors


@dataclass(frozen=True)
class Checked:
    seg: Path
    sr: Path
    sr_lines: list[str]
    """DicomSRValidator's whole output on the SR."""
    sr_messages: list[str]
    copies: dict[str, list[str]]
    """DicomSRValidator's messages on each copy of the SR with one template's groups."""
    seg_errors: list[str]
    sr_instance_errors: list[str]


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Checked]:
    """SEG and SR of every geometry, checked by PixelMed in two JVMs (its XSLT compiles once)."""
    tmp = tmp_path_factory.mktemp("pixelmed")
    written: dict[str, tuple[Path, Path, dict[str, Path]]] = {}
    for name in CASES:
        case = make_case(name, tmp)
        objects = build_results(read_source_series(case.paths), case.findings, SETTINGS)
        stored = {
            s.kind: tmp / "out" / s.relative_path for s in store_results(objects, tmp / "out")
        }
        copies = sr_copies_by_template(stored["sr"], tmp / "copies" / name)
        written[name] = (stored["seg"], stored["sr"], copies)
    srs = [sr for _, sr, _ in written.values()]
    all_copies = [p for _, _, c in written.values() for p in c.values()]
    sr_lines = pixelmed_outputs("DicomSRValidator", srs + all_copies)
    sr_messages = sr_validator_messages_many(srs + all_copies, sr_lines)
    errors = instance_validator_errors_many([seg for seg, _, _ in written.values()] + srs)
    return {
        name: Checked(
            seg=seg,
            sr=sr,
            sr_lines=sr_lines[sr],
            sr_messages=sr_messages[sr],
            copies={kind: sr_messages[path] for kind, path in c.items()},
            seg_errors=errors[seg],
            sr_instance_errors=errors[sr],
        )
        for name, (seg, sr, c) in written.items()
    }


@pytest.mark.parametrize("name", CASES)
def test_dciodvfy_accepts_seg_and_sr(checked: dict[str, Checked], name: str) -> None:
    for path, iod in ((checked[name].seg, "Segmentation"), (checked[name].sr, "Comprehensive3DSR")):
        assert dciodvfy_errors(path) == (iod, []), path.name


@pytest.mark.parametrize("name", CASES)
def test_pixelmed_sr_validator_finds_nothing_of_ours(
    checked: dict[str, Checked], name: str
) -> None:
    """No error and no warning of ours ('Content Item not in template' included) outside the
    measurement groups, and none in the groups of each template on their own: PixelMed
    checks a report that mixes group templates with one template (see
    `outside_measurement_groups`)."""
    result = checked[name]
    templates = group_templates(result.sr)
    assert set(templates) == {"1501", "1411"}, templates  # key slice, volume: mixed
    assert ours(outside_measurement_groups(result.sr, result.sr_messages)) == []
    assert set(result.copies) == {"tid1501", "tid1411"}
    assert result.copies == {"tid1501": [], "tid1411": []}


@pytest.mark.parametrize("name", CASES)
def test_pixelmed_instance_validator_accepts_the_seg(
    checked: dict[str, Checked], name: str
) -> None:
    result = checked[name]
    assert ours(result.seg_errors) == []
    # PixelMed's IOD checker has no SR IODs; DicomSRValidator checked the SR's IOD above.
    assert result.sr_instance_errors == [UNRECOGNIZED_IOD]
    assert "Found Comprehensive3DSR IOD" in result.sr_lines
    assert "IOD validation complete" in result.sr_lines


def test_pixelmed_accepts_the_sr_of_a_study_without_findings(tmp_path: Path) -> None:
    """Nothing to outline: no measurement group (OHIF would stop at one without
    coordinates), the classification as report-level qualitative evaluations only."""
    case = phantom_case(tmp_path / "ct", seed=22, shape=(8, 64, 64), n_nodules=0)
    findings = type(case.findings)(
        **{
            **case.findings.__dict__,
            "labels": np.zeros_like(case.findings.labels),
            "nodules": [],
            "nodule_probability": 0.1,
        }
    )
    objects = build_results(read_source_series(case.paths), findings, SETTINGS)
    (stored,) = store_results(objects, tmp_path / "out")
    path = tmp_path / "out" / stored.relative_path
    (lines,) = pixelmed_outputs("DicomSRValidator", [path]).values()
    assert "Found Root Template TID_1500 (MeasurementReport)" in lines
    assert sr_validator_messages_many([path], {path: lines}) == {path: []}


def test_bundled_pipelines_report_a_procedure_of_cid_100() -> None:
    """TID 1500's Procedure Reported comes from CID 100 (pydicom's table of the standard)."""
    cid_100 = {
        (getattr(getattr(codes, scheme), keyword).value, scheme)
        for scheme, keywords in _cid_dict.cid_concepts[100].items()
        for keyword in keywords
    }
    for pipeline in (lung_nodules_pipeline(), chest_xray_pipeline()):
        procedure = pipeline.description.report.procedure
        assert (procedure.value, procedure.scheme) in cid_100, procedure


# The control: highdicom alone, as its docs write a TID 1500 with a TID 1411 group for a
# segment and a TID 1501 group, and the simplest SEG.


def _control_objects(out: Path) -> dict[str, Path]:
    case = phantom_case(out / "ct", seed=11, shape=(8, 64, 64), n_nodules=1)
    images = sorted(
        (pydicom.dcmread(p) for p in case.paths), key=lambda d: float(d.ImagePositionPatient[2])
    )
    mask = np.zeros((len(images), int(images[0].Rows), int(images[0].Columns)), bool)
    mask[3:5, 20:30, 20:30] = True
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="Nodule",
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Nodule,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=hd.AlgorithmIdentificationSequence(
                    name="control", version="1", family=codes.DCM.ArtificialIntelligence
                ),
            )
        ],
        series_instance_uid=hd.UID(),
        series_number=100,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="Manufacturer",
        manufacturer_model_name="Model",
        software_versions="1",
        device_serial_number="1",
    )
    observer = hd.sr.ObservationContext(
        observer_person_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name="Foo^Bar"
            ),
        )
    )
    volumetric = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier="Nodule", uid=hd.UID()),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=1,
            source_series=hd.sr.SourceSeriesForSegmentation(images[0].SeriesInstanceUID),
        ),
        finding_type=codes.SCT.Nodule,
        measurements=[
            hd.sr.Measurement(name=codes.SCT.Volume, value=1.0, unit=codes.UCUM.CubicMillimeter)
        ],
    )
    image_group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(identifier="Image", uid=hd.UID()),
        finding_type=codes.SCT.Nodule,
        measurements=[
            hd.sr.Measurement(name=codes.SCT.Diameter, value=1.0, unit=codes.UCUM.Millimeter)
        ],
    )
    paths = {"seg": out / "control-seg.dcm"}
    seg.save_as(paths["seg"])
    for name, groups, procedure in (
        ("sr", [volumetric, image_group], codes.LN.CTUnspecifiedBodyRegion),
        ("xr", [image_group], codes.LN.XRUnspecifiedBodyRegion),
    ):
        sr = hd.sr.Comprehensive3DSR(
            evidence=[*images, seg],
            content=hd.sr.MeasurementReport(
                observation_context=observer,
                procedure_reported=procedure,
                imaging_measurements=groups,
            ),
            series_number=101,
            series_instance_uid=hd.UID(),
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="Manufacturer",
        )
        paths[name] = out / f"control-{name}.dcm"
        sr.save_as(paths[name])
    return paths


def test_highdicom_control_draws_the_messages_listed_as_pixelmeds(tmp_path: Path) -> None:
    """Each known fault shows on the control; the control's mixed report draws PixelMed's
    template choice messages inside its TID 1501 group only, and each template's groups on
    their own draw none."""
    control = _control_objects(tmp_path)
    copies = sr_copies_by_template(control["sr"], tmp_path / "copies")
    messages = sr_validator_messages_many([control["sr"], control["xr"], *copies.values()])
    (seg_errors,) = instance_validator_errors_many([control["seg"]]).values()
    mixed = messages[control["sr"]]
    inside = [m for m in mixed if m not in outside_measurement_groups(control["sr"], mixed)]
    assert group_templates(control["sr"]) == ["1411", "1501"]
    errors = [m for m in inside if m.startswith("Error")]
    assert errors, mixed
    assert all("within 1.5.2:" in m and "Missing conditional content item" in m for m in errors)
    # on their own the control's groups draw no error and nothing 'not in template' (its
    # TID 1411 group draws highdicom's title-cased 'Source Series for Segmentation', a
    # warning we avoid by writing the meaning PS3.16 gives)
    for path in copies.values():
        assert [m for m in messages[path] if "Warning: Template 1411" not in m] == [], path
    seen = {normalised(m) for m in [*seg_errors, *messages[control["xr"]], *mixed]}
    assert set(KNOWN_PIXELMED_FAULTS) <= seen, set(KNOWN_PIXELMED_FAULTS) - seen
    assert ours(seg_errors) == [] and ours(messages[control["xr"]]) == []
