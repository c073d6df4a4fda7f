"""The viewer forms (presentation state, secondary captures, key object selection) from
findings, for the results test geometries: valid (dciodvfy, strict pydicom, PixelMed where it
knows the IOD), drawn where the findings are (checked against the label map and the measured
axes, computed here independently of the builders), marked not for primary diagnosis, and
under derived UIDs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from gateway.phantom.radiograph import ProjectedNodule, make_radiograph
from gateway.phantom.radiograph_dicom import write_radiograph
from gateway.pipelines.chest_xray_nodule import pipeline as chest_xray_pipeline
from gateway.pipelines.findings import (
    ImageFinding,
    ModelIdentity,
    PipelineFindings,
    PointFinding,
    SegmentFinding,
)
from gateway.pipelines.lung_nodules.findings import Findings
from gateway.results.config import ResultsSettings
from gateway.results.declared import DeclaredFindings, declared
from gateway.results.identity import ResultUIDs
from gateway.results.key_objects import build_key_object_selection
from gateway.results.presentation_state import build_presentation_state
from gateway.results.secondary_capture import build_secondary_captures
from gateway.results.segmentation import segment_masks
from gateway.results.source import SourceSeries, order_source_series, read_source_series
from gateway.results.viewer_findings import viewer_findings
from tests.results.cases import Case, phantom_case
from tests.results.pixelmed import (
    UNRECOGNIZED_IOD,
    instance_validator_errors_many,
    sr_validator_messages_many,
)
from tests.results.test_results_objects import CASES, make_case
from tests.results.validation import dciodvfy_errors, read_strict

SETTINGS = ResultsSettings(institution_name="Test Hospital")
NOT_FOR_DIAGNOSIS = "NOT FOR PRIMARY DIAGNOSIS"
WHITE = (255, 255, 255)
NODULE_COLOUR = (235, 40, 40)  # lung_nodules/pipeline.toml
IDENTITY = ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "AccessionNumber")


@dataclass(frozen=True)
class Forms:
    case: Case
    item: DeclaredFindings
    source: SourceSeries
    gsps: Path
    scs: list[Path]
    ko: Path


def _saved(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def build_forms(case: Case, out: Path) -> Forms:
    item = declared(case.findings)
    # headers only, as the job runner reads them: the key images read their pixels again
    source = order_source_series(read_source_series(case.paths), item.findings.sop_instance_uids)
    uids = ResultUIDs.for_findings(item.findings)
    gsps = build_presentation_state(source, item, uids, SETTINGS)
    scs = build_secondary_captures(source, item, uids, SETTINGS)
    ko = build_key_object_selection(source, item, uids, SETTINGS)
    assert gsps is not None and ko is not None and scs
    return Forms(
        case,
        item,
        source,
        _saved(gsps, out / "gsps.dcm"),
        [_saved(sc, out / f"sc-{n}.dcm") for n, sc in enumerate(scs, start=1)],
        _saved(ko, out / "ko.dcm"),
    )


@pytest.fixture(scope="module", params=CASES)
def formed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Forms:
    tmp = tmp_path_factory.mktemp("forms")
    return build_forms(make_case(request.param, tmp), tmp / "out")


def reported(forms: Forms) -> list[tuple[SegmentFinding, NDArray[np.bool_]]]:
    """The reported segment findings (nodules) with their masks, in findings order."""
    masks = dict(segment_masks(forms.case.findings))
    return [
        (segment, masks[segment.key])
        for segment in forms.item.findings.segments
        if forms.item.description.segment(segment.label).report
    ]


def to_pixels(image: Dataset, points_mm: object) -> NDArray[np.float64]:
    """Patient points (LPS mm) on `image` to (column, row), 0 at the top left pixel's top
    left corner: ImagePositionPatient is the first pixel's centre."""
    position = np.asarray(image.ImagePositionPatient, dtype=np.float64)
    cosines = np.asarray(image.ImageOrientationPatient, dtype=np.float64)
    row_spacing, column_spacing = (float(v) for v in image.PixelSpacing)
    d = np.asarray(points_mm, dtype=np.float64) - position
    return np.column_stack(
        [d @ cosines[:3] / column_spacing + 0.5, d @ cosines[3:] / row_spacing + 0.5]
    )


def mask_centroid(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """(column, row) centroid of a 2D mask in the same convention."""
    return np.asarray(np.argwhere(mask).mean(axis=0)[::-1] + 0.5, dtype=np.float64)


def outlines_centroid(outlines: list[NDArray[np.float64]]) -> NDArray[np.float64]:
    """Area-weighted centroid of closed polygons (shoelace)."""
    total, moment = 0.0, np.zeros(2)
    for points in outlines:
        x, y, xn, yn = points[:-1, 0], points[:-1, 1], points[1:, 0], points[1:, 1]
        cross = x * yn - xn * y
        area = 0.5 * float(cross.sum())
        total += area
        moment += np.array([((x + xn) * cross).sum(), ((y + yn) * cross).sum()]) / 6.0
    return moment / total


def expected_label(segment: SegmentFinding) -> str:
    value = {m.name: m.value for m in segment.measurements}
    return (
        f"Nodule {segment.index}: {value['long_axis']:.1f} x {value['short_axis']:.1f} mm, "
        f"mean {value['mean_diameter']:.1f} mm, {value['volume']:.0f} mm3"
    )


def test_every_form_is_valid_and_in_the_source_study(formed: Forms) -> None:
    paths = {"gsps": [formed.gsps], "sc": formed.scs, "ko": [formed.ko]}
    expected = {
        "gsps": ("GrayscaleSoftcopyPresentationState", "PR", SETTINGS.gsps_series_number),
        "sc": ("SCImage", "OT", SETTINGS.sc_series_number),
        "ko": ("KeyObjectSelectionDocument", "KO", SETTINGS.ko_series_number),
    }
    source = pydicom.dcmread(formed.case.paths[0], stop_before_pixels=True)
    series = set()
    for kind, found in paths.items():
        iod, modality, number = expected[kind]
        for path in found:
            assert dciodvfy_errors(path) == (iod, []), (kind, path)
            ds = read_strict(path)
            assert (ds.Modality, ds.SeriesNumber) == (modality, number)
            for keyword in IDENTITY:
                assert ds.get(keyword) == source.get(keyword), (kind, keyword)
            series.add(str(ds.SeriesInstanceUID))
    assert len(series) == 3 and str(source.SeriesInstanceUID) not in series


def test_pixelmed_on_every_form_of_every_geometry(tmp_path: Path) -> None:
    """PixelMed checks the KOS (IOD and TID 2010) of every geometry and the radiograph: no
    message. Its instance validator (20220618, Debian) has no GSPS or SC IOD: it says so
    instead of passing them, and says nothing else (dciodvfy checks them above)."""
    built = [
        build_forms(make_case(name, tmp_path / name), tmp_path / name / "out") for name in CASES
    ]
    radiograph = build_radiograph_forms(tmp_path / "radiograph")
    kos = [f.ko for f in built] + [radiograph.paths["KeyObjectSelectionDocument"]]
    assert sr_validator_messages_many(kos) == {path: [] for path in kos}
    images = [f.gsps for f in built] + [sc for f in built for sc in f.scs]
    images += [radiograph.paths["GrayscaleSoftcopyPresentationState"], radiograph.paths["SCImage"]]
    assert instance_validator_errors_many(images) == {path: [UNRECOGNIZED_IOD] for path in images}


def test_gsps_draws_each_finding_on_its_slices_at_its_position(formed: Forms) -> None:
    gsps = read_strict(formed.gsps)
    uids = ResultUIDs.for_findings(formed.item.findings)
    index_of = {str(ds.SOPInstanceUID): i for i, ds in enumerate(formed.source.datasets)}
    assert len(gsps.ReferencedSeriesSequence[0].ReferencedImageSequence) == len(index_of)
    (layer,) = gsps.GraphicLayerSequence
    assert layer.GraphicLayer == "NODULE"
    assert list(layer.GraphicLayerRecommendedDisplayCIELabValue) == list(
        hd.color.CIELabColor.from_rgb(*NODULE_COLOUR).value
    )
    findings = reported(formed)
    assert findings
    for segment, mask in findings:
        tracking = uids.tracking(segment.key)
        annotations = [
            a
            for a in gsps.GraphicAnnotationSequence
            if any(o.TrackingUID == tracking for o in a.GraphicObjectSequence)
        ]
        on = sorted(
            index_of[a.ReferencedImageSequence[0].ReferencedSOPInstanceUID] for a in annotations
        )
        assert on == [i for i in range(len(mask)) if mask[i].any()], segment.key
        axes = segment.axial_axes
        assert axes is not None
        for annotation in annotations:
            assert annotation.GraphicLayer == "NODULE"
            (image,) = annotation.ReferencedImageSequence
            index = index_of[image.ReferencedSOPInstanceUID]
            objects = list(annotation.GraphicObjectSequence)
            assert all(o.GraphicAnnotationUnits == "PIXEL" for o in objects)
            points = [np.asarray(o.GraphicData, dtype=np.float64).reshape(-1, 2) for o in objects]
            outlines = [p for p in points if len(p) > 2]
            assert outlines and all(np.array_equal(p[0], p[-1]) for p in outlines)  # closed
            np.testing.assert_allclose(
                outlines_centroid(outlines), mask_centroid(mask[index]), atol=1.0
            )
            lines = [p for p in points if len(p) == 2]
            texts = list(annotation.get("TextObjectSequence", []))
            if index != axes.slice_index:
                assert lines == [] and texts == []
                continue
            source = formed.source.datasets[index]
            assert source.SOPInstanceUID == axes.sop_instance_uid
            (long_axis, short_axis) = lines
            np.testing.assert_allclose(
                long_axis, to_pixels(source, axes.long_axis_points), atol=0.01
            )
            np.testing.assert_allclose(
                short_axis, to_pixels(source, axes.short_axis_points), atol=0.01
            )
            (text,) = texts
            assert text.UnformattedTextValue == expected_label(segment)
            assert text.TrackingUID == tracking
            column, row = text.AnchorPoint
            assert 0 <= column <= source.Columns and 0 <= row <= source.Rows


def test_gsps_keeps_the_source_window(formed: Forms) -> None:
    gsps = read_strict(formed.gsps)
    source = formed.source.first
    (voi,) = gsps.SoftcopyVOILUTSequence
    if source.get("WindowCenter") is not None:
        assert float(voi.WindowCenter) == float(source.WindowCenter)
        assert float(voi.WindowWidth) == float(source.WindowWidth)
    else:  # pydicom's CT_small has none: the lung window
        assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (-600.0, 1500.0)
    assert gsps.PresentationLUTShape == "IDENTITY"  # MONOCHROME2
    assert float(gsps.RescaleIntercept) == float(source.RescaleIntercept)


def test_gsps_keeps_a_window_of_the_source_other_than_the_default(tmp_path: Path) -> None:
    """A mediastinal window on the source (not the lung window a CT without one gets) is
    the presentation state's too."""
    case = phantom_case(tmp_path / "ct", seed=23, shape=(10, 64, 64), n_nodules=1)
    item = declared(case.findings)
    headers = read_source_series(case.paths)
    for ds in headers:
        ds.WindowCenter, ds.WindowWidth = "40", "400"
    source = order_source_series(headers, item.findings.sop_instance_uids)
    gsps = build_presentation_state(source, item, ResultUIDs.for_findings(item.findings), SETTINGS)
    assert gsps is not None
    (voi,) = gsps.SoftcopyVOILUTSequence
    assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (40.0, 400.0)


def _has_colour(
    pixels: NDArray[np.uint8], xy: NDArray[np.float64], colour: tuple[int, int, int]
) -> bool:
    """Whether a pixel within one of the point (column, row; corner convention) has it."""
    column, row = int(np.floor(xy[0])), int(np.floor(xy[1]))
    near = pixels[max(row - 1, 0) : row + 2, max(column - 1, 0) : column + 2]
    return bool(np.all(near == np.array(colour, dtype=np.uint8), axis=-1).any())


def _crack_middles(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Middles of the pixel edges between inside and outside, (column, row)."""
    padded = np.pad(mask, 1)
    found = []
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        outside = ~padded[1 + dr : padded.shape[0] - 1 + dr, 1 + dc : padded.shape[1] - 1 + dc]
        for r, c in np.argwhere(mask & outside):
            found.append((c + 0.5 + 0.5 * dc, r + 0.5 + 0.5 * dr))
    return np.array(found, dtype=np.float64)


def _ink(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The mask cropped to the box of its set pixels."""
    rows, columns = np.nonzero(mask)
    if len(rows) == 0:
        return mask[:0, :0]
    return mask[rows.min() : rows.max() + 1, columns.min() : columns.max() + 1]


def _text_ink(text: str, size: int) -> NDArray[np.bool_]:
    """`text` as Pillow's default font draws it at `size` px, without anti-aliasing."""
    font = ImageFont.load_default(size=size)
    _, _, right, bottom = font.getbbox(text)
    # room to spare: unsmoothed glyphs can reach past the smoothed box getbbox measures
    canvas = Image.new("L", (2 * int(right) + 16, 2 * int(bottom) + 16), 0)
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "1"
    draw.text((2, 2), text, fill=255, font=font)
    return _ink(np.asarray(canvas) > 0)


def burned_in_text(band: NDArray[np.uint8], colour: tuple[int, int, int], text: str) -> int | None:
    """The font size (8-32 px, Pillow's default font) at which the pixels of `colour` in the
    text band are exactly `text`, None if at no size: the words themselves, not just some
    pixels of that colour."""
    found = _ink(np.all(band == np.array(colour, dtype=np.uint8), axis=-1))
    for size in range(8, 33):
        expected = _text_ink(text, size)
        if expected.shape == found.shape and np.array_equal(expected, found):
            return size
    return None


def test_secondary_captures_burn_in_the_finding_and_the_warning(formed: Forms) -> None:
    findings = reported(formed)
    assert len(formed.scs) == len(findings)
    for number, (path, (segment, mask)) in enumerate(
        zip(formed.scs, findings, strict=True), start=1
    ):
        sc = read_strict(path)
        axes = segment.axial_axes
        assert axes is not None
        source = formed.source.datasets[axes.slice_index]
        # header: derived, not for primary diagnosis, from that slice
        assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert sc.BurnedInAnnotation == "YES"
        assert NOT_FOR_DIAGNOSIS in sc.DerivationDescription
        assert NOT_FOR_DIAGNOSIS in sc.ImageComments
        assert f"Nodule {segment.index}" in sc.ImageComments
        assert sc.SeriesDescription == SETTINGS.sc_series_description
        assert sc.InstanceNumber == number
        (reference,) = sc.SourceImageSequence
        assert reference.ReferencedSOPInstanceUID == axes.sop_instance_uid
        assert reference.ReferencedSOPClassUID == source.SOPClassUID
        assert reference.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
        assert (sc.PhotometricInterpretation, sc.SamplesPerPixel) == ("RGB", 3)
        pixels = np.asarray(sc.pixel_array)
        # highdicom reads it back as an image with the same pixels
        assert np.array_equal(hd.imread(path).get_frame(1), pixels)
        factor = sc.Columns // source.Columns
        assert factor >= 1 and sc.Columns == factor * source.Columns
        band = sc.Rows - factor * source.Rows
        assert band > 0
        spacing = [float(v) for v in source.PixelSpacing]
        assert [float(v) for v in sc.PixelSpacing] == pytest.approx(
            [s / factor for s in spacing], rel=1e-9
        )
        # the text band: the warning in white and the label in the finding's colour, on black
        text = pixels[:band].reshape(-1, 3)
        kinds = {tuple(int(v) for v in p) for p in np.unique(text, axis=0)}
        assert kinds == {(0, 0, 0), WHITE, NODULE_COLOUR}
        # in it, the warning in white and the finding's values in its colour, word for word
        warning = burned_in_text(pixels[:band], WHITE, NOT_FOR_DIAGNOSIS)
        assert warning is not None, f"expected '{NOT_FOR_DIAGNOSIS}' in white in the band"
        label = burned_in_text(pixels[:band], NODULE_COLOUR, expected_label(segment))
        assert label is not None, f"expected '{expected_label(segment)}' in the band"
        # the outline: every boundary edge of the finding on its key slice
        for middle in _crack_middles(mask[axes.slice_index]):
            at = middle * factor + np.array([0.0, band])
            assert _has_colour(pixels, at, NODULE_COLOUR), (segment.key, middle)
        # the axes: their middles
        for points in (axes.long_axis_points, axes.short_axis_points):
            middle = to_pixels(source, points).mean(axis=0) * factor + np.array([0.0, band])
            assert _has_colour(pixels, middle, NODULE_COLOUR), (segment.key, points)
        # and nothing of that colour far from the finding
        image = pixels[band:]
        rows, columns = np.nonzero(np.all(image == np.array(NODULE_COLOUR), axis=-1))
        inside = np.argwhere(mask[axes.slice_index])
        low = (inside.min(axis=0) - 1) * factor
        high = (inside.max(axis=0) + 2) * factor
        assert rows.min() >= low[0] - 3 and rows.max() <= high[0] + 3
        assert columns.min() >= low[1] - 3 and columns.max() <= high[1] + 3


def test_key_objects_flag_exactly_the_key_slices(formed: Forms) -> None:
    ds = read_strict(formed.ko)
    ko = hd.ko.KeyObjectSelectionDocument.from_dataset(ds)
    assert ko.ConceptNameCodeSequence[0].CodeValue == "113000"
    assert ko.ConceptNameCodeSequence[0].CodingSchemeDesignator == "DCM"
    expected = list(
        dict.fromkeys(
            segment.axial_axes.sop_instance_uid
            for segment, _ in reported(formed)
            if segment.axial_axes is not None
        )
    )
    images = [item for item in ds.ContentSequence if item.ValueType == "IMAGE"]
    assert [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images] == expected
    evidence = [
        sop.ReferencedSOPInstanceUID
        for series in ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    ]
    assert sorted(evidence) == sorted(expected)
    (description,) = [
        item.TextValue
        for item in ds.ContentSequence
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "113012"
    ]
    for segment, _ in reported(formed):
        assert f"{expected_label(segment).split(':')[0]} (" in description
    source = formed.source.first
    for keyword in ("PatientName", "PatientID"):
        value = str(source.get(keyword, ""))
        assert not value or value not in description


def test_uids_are_stable_and_change_with_the_model_version(tmp_path: Path) -> None:
    case = phantom_case(tmp_path / "ct", seed=21, shape=(12, 64, 64), n_nodules=2)

    def uids_of(findings: Findings) -> list[tuple[str, str]]:
        item = declared(findings)
        source = order_source_series(
            read_source_series(case.paths), item.findings.sop_instance_uids
        )
        uids = ResultUIDs.for_findings(item.findings)
        objects = [
            build_presentation_state(source, item, uids, SETTINGS),
            *build_secondary_captures(source, item, uids, SETTINGS),
            build_key_object_selection(source, item, uids, SETTINGS),
        ]
        return [
            (str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)) for ds in objects if ds is not None
        ]

    first, again = uids_of(case.findings), uids_of(case.findings)
    assert len(first) == 4  # GSPS, two key images, KOS
    assert first == again
    assert len({sop for _, sop in first}) == 4
    assert len({series for series, _ in first}) == 3
    other_version = dataclasses.replace(
        case.findings, segmentation_model=ModelIdentity("lung_nodule_unet", "2")
    )
    other = uids_of(other_version)
    assert {u for pair in first for u in pair}.isdisjoint(u for pair in other for u in pair)


def test_findings_drawn_once_give_the_same_forms(tmp_path: Path) -> None:
    """A caller building several forms passes viewer_findings once: same objects."""
    case = phantom_case(tmp_path / "ct", seed=21, shape=(12, 64, 64), n_nodules=2)
    item = declared(case.findings)
    source = order_source_series(read_source_series(case.paths), item.findings.sop_instance_uids)
    uids = ResultUIDs.for_findings(item.findings)
    drawn = viewer_findings(source, item, SETTINGS)
    assert [f.title for f in drawn] == ["Nodule 1", "Nodule 2"]
    pairs = [
        (
            build_presentation_state(source, item, uids, SETTINGS),
            build_presentation_state(source, item, uids, SETTINGS, drawn),
        ),
        (
            build_key_object_selection(source, item, uids, SETTINGS),
            build_key_object_selection(source, item, uids, SETTINGS, drawn),
        ),
        *zip(
            build_secondary_captures(source, item, uids, SETTINGS),
            build_secondary_captures(source, item, uids, SETTINGS, drawn),
            strict=True,
        ),
    ]
    for alone, shared in pairs:
        assert alone is not None and shared is not None
        for keyword in ("SOPInstanceUID", "GraphicAnnotationSequence", "ContentSequence"):
            assert alone.get(keyword) == shared.get(keyword), keyword
        if "PixelData" in alone:
            assert alone.PixelData == shared.PixelData


def test_nothing_reported_gives_no_viewer_forms(tmp_path: Path) -> None:
    case = phantom_case(tmp_path / "ct", seed=22, shape=(8, 64, 64), n_nodules=0)
    item = declared(case.findings)
    source = order_source_series(read_source_series(case.paths), item.findings.sop_instance_uids)
    uids = ResultUIDs.for_findings(item.findings)
    assert [s.key for s in item.findings.segments] == ["lung"]  # lung: not reported
    assert build_presentation_state(source, item, uids, SETTINGS) is None
    assert build_secondary_captures(source, item, uids, SETTINGS) == []
    assert build_key_object_selection(source, item, uids, SETTINGS) is None


@dataclass(frozen=True)
class RadiographForms:
    truth: ProjectedNodule
    header: Dataset
    paths: dict[str, Path]
    """By the IOD dciodvfy names."""


def build_radiograph_forms(out: Path) -> RadiographForms:
    """chest_xray_nodule's forms for a MONOCHROME1 CR with one nodule, its point from the
    phantom's truth."""
    description = chest_xray_pipeline().description
    rad = make_radiograph(
        15103,
        photometric="MONOCHROME1",
        n_nodules=1,
        nodule_diameter_mm=(16.0, 24.0),
        long_side_px=900,
    )
    path = write_radiograph(rad, out / "cr.dcm", modality="CR")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    (truth,) = rad.nodules
    uid = str(header.SOPInstanceUID)
    findings = PipelineFindings(
        pipeline=description.name,
        labels=np.zeros((1, 1, 1), dtype=np.uint8),
        sop_instance_uids=(uid,),
        study_instance_uid=str(header.StudyInstanceUID),
        series_instance_uid=str(header.SeriesInstanceUID),
        frame_of_reference_uid="",
        segments=(),
        image_findings=(ImageFinding("nodule", 0.9, True),),
        models=(ModelIdentity("chest_xray_nodule", "1"),),
        runner="ground-truth",
        point_findings=(
            PointFinding("nodule", 1, uid, truth.row, truth.column, truth.radius_px, 0.87),
        ),
    )
    item = declared(findings, description)
    source = order_source_series(read_source_series([path]), (uid,), "image")
    uids = ResultUIDs.for_findings(findings, pipeline="chest_xray_nodule#1")
    gsps = build_presentation_state(source, item, uids, SETTINGS)
    (sc,) = build_secondary_captures(source, item, uids, SETTINGS)
    ko = build_key_object_selection(source, item, uids, SETTINGS)
    assert gsps is not None and ko is not None
    paths = {
        "GrayscaleSoftcopyPresentationState": _saved(gsps, out / "gsps.dcm"),
        "SCImage": _saved(sc, out / "sc.dcm"),
        "KeyObjectSelectionDocument": _saved(ko, out / "ko.dcm"),
    }
    return RadiographForms(truth, header, paths)


def test_radiograph_gets_a_circle_in_every_form(tmp_path: Path) -> None:
    """chest_xray_nodule: a point per finding on a MONOCHROME1 CR (no frame of reference):
    a GSPS circle and text (shown inverted, as MONOCHROME1 is meant), a key image with the
    circle burned in, a KOS of the image."""
    forms = build_radiograph_forms(tmp_path)
    truth, header, written = forms.truth, forms.header, forms.paths
    uid = str(header.SOPInstanceUID)
    for iod, written_path in written.items():
        assert dciodvfy_errors(written_path) == (iod, []), iod
    centre = np.array([truth.column + 0.5, truth.row + 0.5])

    pr = read_strict(written["GrayscaleSoftcopyPresentationState"])
    assert pr.PresentationLUTShape == "INVERSE"
    (annotation,) = pr.GraphicAnnotationSequence
    assert annotation.ReferencedImageSequence[0].ReferencedSOPInstanceUID == uid
    (circle,) = annotation.GraphicObjectSequence
    assert circle.GraphicType == "CIRCLE"
    data = np.asarray(circle.GraphicData, dtype=np.float64).reshape(2, 2)
    np.testing.assert_allclose(data[0], centre, atol=1e-3)
    assert np.linalg.norm(data[1] - data[0]) == pytest.approx(truth.radius_px, abs=1e-3)
    (text,) = annotation.TextObjectSequence
    assert text.UnformattedTextValue == "Nodule 1: probability 0.87"

    key = read_strict(written["SCImage"])
    assert key.BurnedInAnnotation == "YES" and NOT_FOR_DIAGNOSIS in key.ImageComments
    assert "PixelSpacing" not in key  # a projection: no true size at the patient
    pixels = np.asarray(key.pixel_array)
    factor = key.Columns / header.Columns
    band = key.Rows - round(factor * header.Rows)
    in_band = {tuple(int(v) for v in p) for p in np.unique(pixels[:band].reshape(-1, 3), axis=0)}
    assert in_band == {(0, 0, 0), WHITE, SETTINGS.point_colour}
    warning = burned_in_text(pixels[:band], WHITE, NOT_FOR_DIAGNOSIS)
    assert warning is not None, f"expected '{NOT_FOR_DIAGNOSIS}' in white in the band"
    label = burned_in_text(pixels[:band], SETTINGS.point_colour, "Nodule 1: probability 0.87")
    assert label is not None, "expected 'Nodule 1: probability 0.87' in the band"
    for angle in np.linspace(0, 2 * np.pi, 16, endpoint=False):
        edge = centre + truth.radius_px * np.array([np.cos(angle), np.sin(angle)])
        assert _has_colour(pixels, edge * factor + np.array([0.0, band]), SETTINGS.point_colour)
    assert not _has_colour(pixels, centre * factor + np.array([0.0, band]), SETTINGS.point_colour)

    kos = read_strict(written["KeyObjectSelectionDocument"])
    images = [i for i in kos.ContentSequence if i.ValueType == "IMAGE"]
    assert [i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images] == [uid]
