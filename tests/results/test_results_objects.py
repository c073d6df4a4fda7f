"""SEG and TID 1500 SR from findings: valid (dciodvfy, strict pydicom, highdicom round trip),
placed where the source slices are, and consistent with each other."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from gateway.pipelines.lung_nodules import pipeline as lung_nodules_pipeline
from gateway.pipelines.lung_nodules.findings import NoduleFinding
from gateway.results.build import ResultObject, build_results, store_results
from gateway.results.config import ResultsSettings
from gateway.results.identity import ResultUIDs
from gateway.results.reading import reported_image_findings
from gateway.results.segmentation import segment_masks
from gateway.results.source import read_source_series
from tests.results.cases import (
    Case,
    phantom_case,
    pydicom_ct_case,
    tilted_case,
)
from tests.results.ohif_rules import ohif_measurements
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
    assert report.get_planar_roi_measurement_groups() == []
    # the image-level classification: report-level qualitative evaluations, no group
    (finding,) = reported_image_findings(sr)
    assert finding.finding == ("27925004", "SCT", "Nodule") and finding.present
    assert finding.probability == pytest.approx(case.findings.nodule_probability, abs=1e-4)
    evidence = {
        item.SeriesInstanceUID
        for item in sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    }
    assert evidence == {case.findings.series_instance_uid, seg.SeriesInstanceUID}


MM = hd.sr.CodedConcept("mm", "UCUM", "millimeter")
LONG_AXIS = hd.sr.CodedConcept("103339001", "SCT", "Long Axis")
SHORT_AXIS = hd.sr.CodedConcept("103340004", "SCT", "Short Axis")


def patient_mm(image: pydicom.Dataset, column_row: np.ndarray) -> np.ndarray:
    """SCOORD (column, row) image coordinates, 0.0 = top left corner of the top left pixel,
    to patient coordinates (PS3.3 C.7.6.2.1.1), from the image's header alone."""
    position = np.array([float(v) for v in image.ImagePositionPatient])
    orientation = np.array([float(v) for v in image.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in image.PixelSpacing)
    centre = np.asarray(column_row, dtype=float) - 0.5  # pixel indices of the centres
    return (
        position
        + centre[:, :1] * column_spacing * orientation[:3]
        + centre[:, 1:2] * row_spacing * orientation[3:]
    )


def assert_nodule_measurements(
    group: hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations,
    nodule: NoduleFinding,
    case: Case,
    report: hd.sr.MeasurementReport,
) -> None:
    """The volume in the volumetric group; long and short axis and their mean (Lung-RADS)
    in the key-slice group of the same finding, each axis a 2-point SCOORD POLYLINE on its
    key slice whose pixel coordinates map back to the measured end points within 0.01 mm,
    the mean inferred from both lines."""
    measured = {m.name: m for m in group.get_measurements()}
    assert set(measured) == {codes.SCT.Volume}
    volume = measured[codes.SCT.Volume]
    assert volume.unit == hd.sr.CodedConcept("mm3", "UCUM", "cubic millimeter")
    assert volume.value == pytest.approx(nodule.volume_mm3, abs=0.1)
    assert volume[0].get("ContentSequence") is None  # OHIF labels only NUMs without children
    (key,) = [
        g for g in report.get_image_measurement_groups() if g.tracking_uid == group.tracking_uid
    ]
    assert (
        key.tracking_identifier == f"Cornerstone3DTools@^0.1.0:Bidirectional:Nodule {nodule.index}"
    )
    placed = {m.name: m for m in key.get_measurements()}
    assert list(placed) == [LONG_AXIS, SHORT_AXIS, codes.SCT.Diameter]  # long axis first
    assert [m.name.meaning for m in key.get_measurements()][:2] == ["Long Axis", "Short Axis"]
    mean = placed[codes.SCT.Diameter]
    assert mean.unit == MM and mean.derivation == codes.SCT.Mean
    assert mean.value == pytest.approx((nodule.long_axis_mm + nodule.short_axis_mm) / 2, abs=0.051)
    assert mean.value == nodule.mean_diameter_mm
    axes = nodule.axial_axes
    assert axes is not None and axes.sop_instance_uid in case.findings.sop_instance_uids
    headers = {str(ds.SOPInstanceUID): ds for ds in read_source_series(case.paths)}
    lines = []
    for concept, value, points in (
        (LONG_AXIS, nodule.long_axis_mm, axes.long_axis_points),
        (SHORT_AXIS, nodule.short_axis_mm, axes.short_axis_points),
    ):
        item = placed[concept]
        assert item.unit == MM and item.value == pytest.approx(value, abs=0.051)
        (line,) = item.referenced_coordinates
        assert line.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        assert line.value.shape == (2, 2)
        (selected_from,) = line.ContentSequence
        (image,) = selected_from.ReferencedSOPSequence
        assert image.ReferencedSOPInstanceUID == axes.sop_instance_uid  # on its key slice
        back = patient_mm(headers[axes.sop_instance_uid], line.value)
        np.testing.assert_allclose(back, np.array(points), atol=0.01)
        assert np.linalg.norm(back[1] - back[0]) == pytest.approx(value, abs=0.01)
        lines.append(line.value)
    both = [c.value for c in mean.referenced_coordinates]
    assert len(both) == 2
    for drawn, line in zip(both, lines, strict=True):
        np.testing.assert_array_equal(drawn, line)


def test_ohif_reads_each_nodule_as_one_labelled_measurement_on_its_key_slice(
    built: tuple[Case, dict[str, Path]],
) -> None:
    """OHIF 3.13's SR reading (tests/results/ohif_rules.py): per nodule one measurement whose
    NUMs all give labels and whose first coordinates are the long axis on the key slice; no
    measurement without coordinates (it would stop OHIF loading the SR)."""
    case, paths = built
    measurements = ohif_measurements(pydicom.dcmread(paths["sr"]))
    assert [m.problems for m in measurements] == [[] for _ in measurements]
    assert len(measurements) == len(case.findings.nodules)
    for m, nodule in zip(measurements, case.findings.nodules, strict=True):
        assert m.tracking_identifier.endswith(f":Nodule {nodule.index}")
        assert not m.tid1410_style
        assert m.labels == ["Long Axis", "Short Axis", "Diameter", "Volume"]
        assert nodule.axial_axes is not None
        assert m.first_image_uid == nodule.axial_axes.sop_instance_uid


def test_seg_segments_carry_the_declared_colours(built: tuple[Case, dict[str, Path]]) -> None:
    """RecommendedDisplayCIELabValue of each segment is the pipeline file's colour."""
    _, paths = built
    seg = pydicom.dcmread(paths["seg"], stop_before_pixels=True)
    description = lung_nodules_pipeline().description
    colours = {d.title: d.colour for d in description.segments}
    assert len(seg.SegmentSequence) >= 2
    for segment in seg.SegmentSequence:
        title = str(segment.SegmentLabel).split(" ")[0]
        stored = [int(v) for v in segment.RecommendedDisplayCIELabValue]
        assert stored == list(hd.color.CIELabColor.from_rgb(*colours[title]).value)
        rgb = hd.color.CIELabColor.from_dicom_value(stored).to_rgb()
        assert np.allclose(rgb, colours[title], atol=1), (title, rgb)


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
    assert sr.content.get_image_measurement_groups() == []
    (finding,) = reported_image_findings(sr)
    assert not finding.present and finding.probability == pytest.approx(0.1)
    assert ohif_measurements(sr) == []
