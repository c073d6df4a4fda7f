"""SEG and TID 1500 SR from findings: valid (dciodvfy, strict pydicom, highdicom round trip),
placed where the source slices are, and consistent with each other."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from gateway.pipelines.lung_nodules.findings import NoduleFinding
from gateway.results.build import ResultObject, build_results, store_results
from gateway.results.config import ResultsSettings
from gateway.results.identity import ResultUIDs
from gateway.results.segmentation import segment_masks
from gateway.results.source import read_source_series
from tests.results.cases import (
    Case,
    phantom_case,
    pydicom_ct_case,
    tilted_case,
)
from tests.results.validation import dciodvfy_errors, read_strict

SETTINGS = ResultsSettings(institution_name="Test Hospital")


def make_case(name: str, tmp: Path) -> Case:
    if name == "axial-head-first":
        return phantom_case(tmp / name, seed=11)
    if name == "axial-feet-first":
        return phantom_case(tmp / name, seed=12, head_first=False)
    if name == "fine-spacing":
        return phantom_case(tmp / name, seed=13, shape=(24, 128, 96), spacing=(1.0, 0.7, 0.7))
    if name == "tilted":
        return tilted_case(tmp / name, seed=14)
    if name == "pydicom-ct":
        return pydicom_ct_case(tmp / name)
    raise AssertionError(name)


CASES = ["axial-head-first", "axial-feet-first", "fine-spacing", "tilted", "pydicom-ct"]


@pytest.fixture(scope="module", params=CASES)
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Case, dict[str, Path]]:
    tmp = tmp_path_factory.mktemp("results")
    case = make_case(request.param, tmp)
    objects = build_results(read_source_series(case.paths), case.findings, SETTINGS)
    stored = store_results(objects, tmp / "out")
    return case, {s.kind: tmp / "out" / s.relative_path for s in stored}


def test_dciodvfy_reports_no_errors(built: tuple[Case, dict[str, Path]]) -> None:
    _, paths = built
    assert set(paths) == {"seg", "sr"}
    for kind, expected_iod in (("seg", "Segmentation"), ("sr", "Comprehensive3DSR")):
        iod, errors = dciodvfy_errors(paths[kind])
        assert iod == expected_iod, (kind, iod)
        assert errors == [], f"{kind}: {errors}"


def test_strict_read_and_highdicom_round_trip(built: tuple[Case, dict[str, Path]]) -> None:
    case, paths = built
    seg_ds, sr_ds = read_strict(paths["seg"]), read_strict(paths["sr"])
    source = pydicom.dcmread(case.paths[0], stop_before_pixels=True)
    for ds in (seg_ds, sr_ds):
        # Same patient and study, copied from the source, never invented.
        for keyword in (
            "PatientName",
            "PatientID",
            "StudyInstanceUID",
            "StudyDate",
            "AccessionNumber",
            "StudyID",
        ):
            assert ds.get(keyword) == source.get(keyword), keyword
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        (equipment,) = [
            item
            for item in ds.ContributingEquipmentSequence
            if item.Manufacturer == SETTINGS.manufacturer
        ]
        assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
        assert "lung_nodule_unet 1" in equipment.SoftwareVersions
        assert "nodule_cnn 1" in equipment.SoftwareVersions
    seg = hd.seg.segread(paths["seg"])
    sr = hd.sr.srread(paths["sr"])
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    assert seg.SegmentationType == "BINARY"
    description = seg.get_segment_description(1)
    assert description.segment_label == "Lung"
    assert description.algorithm_identification[0].AlgorithmName == "lung_nodule_unet"
    assert description.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC


def test_seg_frames_sit_on_their_source_slices_and_masks_match(
    built: tuple[Case, dict[str, Path]],
) -> None:
    case, paths = built
    seg = hd.seg.segread(paths["seg"])
    headers = {str(ds.SOPInstanceUID): ds for ds in read_source_series(case.paths)}
    assert seg.FrameOfReferenceUID == case.findings.frame_of_reference_uid
    assert int(seg.NumberOfFrames) > 0
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source_uid = (
            frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        )
        source = headers[source_uid]
        np.testing.assert_allclose(
            [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient],
            [float(v) for v in source.ImagePositionPatient],
            atol=1e-3,
        )
        orientation = (
            frame.PlaneOrientationSequence[0]
            if "PlaneOrientationSequence" in frame
            else seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
        )
        np.testing.assert_allclose(
            [float(v) for v in orientation.ImageOrientationPatient],
            [float(v) for v in source.ImageOrientationPatient],
            atol=1e-5,
        )
    masks = segment_masks(case.findings)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(case.findings.sop_instance_uids),
        segment_numbers=list(range(1, len(masks) + 1)),
        combine_segments=False,
    )
    expected = np.stack([mask for _, mask in masks], axis=-1)
    assert pixels.shape == expected.shape
    assert np.array_equal(pixels.astype(bool), expected)


def test_sr_groups_reference_their_seg_segments(built: tuple[Case, dict[str, Path]]) -> None:
    case, paths = built
    seg = hd.seg.segread(paths["seg"])
    sr = hd.sr.srread(paths["sr"])
    report = sr.content
    groups = report.get_volumetric_roi_measurement_groups()
    nodules = case.findings.nodules
    assert len(groups) == len(nodules)
    segment_by_tracking = {
        seg.get_segment_description(n).tracking_uid: n for n in seg.segment_numbers
    }
    for group, nodule in zip(groups, nodules, strict=True):
        assert group.tracking_identifier == f"Nodule {nodule.index}"
        referenced = group.referenced_segment
        assert referenced is not None
        assert referenced.referenced_sop_instance_uid == seg.SOPInstanceUID
        (number,) = referenced.referenced_segment_numbers or [0]
        # tracking UID shared by the SR group and the SEG segment it references
        assert segment_by_tracking[group.tracking_uid] == number
        assert_nodule_measurements(group, nodule, case, report)
        # the segment holds exactly that nodule's voxels
        mask = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=list(case.findings.sop_instance_uids),
            segment_numbers=[number],
        )
        assert int(mask.astype(bool).sum()) == nodule.voxel_count
    classification = report.get_planar_roi_measurement_groups()  # none expected
    assert classification == []
    others = [
        g
        for g in report.get_image_measurement_groups()
        if g.tracking_identifier == "Nodule classification"
    ]
    assert len(others) == 1
    (probability,) = others[0].get_measurements(name=codes.DCM.Probability)
    assert probability.value == pytest.approx(case.findings.nodule_probability, abs=1e-4)
    (evaluation,) = others[0].get_qualitative_evaluations(name=codes.SCT.Nodule)
    assert evaluation.value == codes.SCT.Present
    evidence = {
        item.SeriesInstanceUID
        for item in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    }
    assert evidence == {case.findings.series_instance_uid, seg.SeriesInstanceUID}


MM = hd.sr.CodedConcept("mm", "UCUM", "millimeter")


def assert_nodule_measurements(
    group: hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations,
    nodule: NoduleFinding,
    case: Case,
    report: hd.sr.MeasurementReport,
) -> None:
    """Volume, long and short axis and their mean (Lung-RADS) with their codes and UCUM
    units; a group of the same finding with each axis inferred from its end points on its
    slice, and the centre as a POINT."""
    measured = {m.name: m for m in group.get_measurements()}
    assert set(measured) == {
        codes.SCT.Volume,
        codes.SCT.LongAxis,
        codes.SCT.ShortAxis,
        codes.SCT.Diameter,
    }
    volume = measured[codes.SCT.Volume]
    assert volume.unit == hd.sr.CodedConcept("mm3", "UCUM", "cubic millimeter")
    assert volume.value == pytest.approx(nodule.volume_mm3, abs=0.1)
    mean = measured[codes.SCT.Diameter]
    assert mean.unit == MM and mean.derivation == codes.SCT.Mean
    assert mean.value == pytest.approx((nodule.long_axis_mm + nodule.short_axis_mm) / 2, abs=0.051)
    assert mean.value == nodule.mean_diameter_mm
    (where,) = [
        g for g in report.get_image_measurement_groups() if g.tracking_uid == group.tracking_uid
    ]
    placed = {m.name: m for m in where.get_measurements()}
    axes = nodule.axial_axes
    assert axes is not None and axes.sop_instance_uid in case.findings.sop_instance_uids
    for concept, value, points in (
        (codes.SCT.LongAxis, nodule.long_axis_mm, axes.long_axis_points),
        (codes.SCT.ShortAxis, nodule.short_axis_mm, axes.short_axis_points),
    ):
        for item in (measured[concept], placed[concept]):
            assert item.unit == MM and item.value == pytest.approx(value, abs=0.051)
        (image,) = placed[concept].referenced_images
        assert image.referenced_sop_instance_uid == axes.sop_instance_uid
        line = placed[concept].referenced_coordinates[0]
        assert line.graphic_type == hd.sr.GraphicTypeValues3D.POLYLINE
        assert line.ReferencedFrameOfReferenceUID == case.findings.frame_of_reference_uid
        np.testing.assert_allclose(line.value, np.array(points), atol=1e-3)
        assert np.linalg.norm(line.value[1] - line.value[0]) == pytest.approx(value, abs=1e-3)
    centre = placed[codes.SCT.LongAxis].referenced_coordinates[1]
    assert centre.graphic_type == hd.sr.GraphicTypeValues3D.POINT
    assert centre.name == codes.DCM.Center
    np.testing.assert_allclose(centre.value, [nodule.centroid_patient_mm], atol=1e-3)


def test_uids_are_derived_from_series_pipeline_and_models(tmp_path: Path) -> None:
    case = phantom_case(tmp_path / "ct", seed=21, shape=(12, 64, 64), n_nodules=1)
    headers = read_source_series(case.paths)
    first = build_results(headers, case.findings, SETTINGS)
    again = build_results(headers, case.findings, SETTINGS)
    assert [o.sop_instance_uid for o in first] == [o.sop_instance_uid for o in again]
    assert (
        first[0].dataset.SegmentSequence[0].TrackingUID
        == again[0].dataset.SegmentSequence[0].TrackingUID
    )
    other = ResultUIDs.for_findings(case.findings, pipeline="other")
    third = build_results(headers, case.findings, SETTINGS, other)
    assert {o.sop_instance_uid for o in first}.isdisjoint(o.sop_instance_uid for o in third)


def test_nothing_to_outline_gives_an_sr_without_seg(tmp_path: Path) -> None:
    case = phantom_case(tmp_path / "ct", seed=22, shape=(8, 64, 64), n_nodules=0)
    empty = np.zeros_like(case.findings.labels)
    findings = type(case.findings)(
        **{**case.findings.__dict__, "labels": empty, "nodules": [], "nodule_probability": 0.1}
    )
    objects: list[ResultObject] = build_results(read_source_series(case.paths), findings, SETTINGS)
    assert [o.kind for o in objects] == ["sr"]
    path = store_results(objects, tmp_path / "out")[0]
    iod, errors = dciodvfy_errors(tmp_path / "out" / path.relative_path)
    assert (iod, errors) == ("Comprehensive3DSR", [])
    sr = hd.sr.srread(tmp_path / "out" / path.relative_path)
    (group,) = sr.content.get_image_measurement_groups()
    (evaluation,) = group.get_qualitative_evaluations(name=codes.SCT.Nodule)
    assert evaluation.value == codes.SCT.Absent
