"""The pipeline's SEG and SR in the real OHIF Viewer (npm @ohif/app 3.13.2, headless Chromium)
against Orthanc's DICOMweb: a study processed end to end by the gateway, opened as a user
would (double-click the series in the study browser), checked from OHIF's own state: its
segmentation service (segments, labels, colours), its SR parsing (each finding on its key
slice with every value of the SR), the annotations drawn, and its measurement service and
Measurements panel (each nodule listed by name with its values)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.results.validation import dciodvfy_errors
from tests.viewer.conftest import LEGACY_FORMS, ProcessedStudy
from tests.viewer.expected import (
    LONG_AXIS,
    SHORT_AXIS,
    ExpectedFinding,
    distance_to_mask,
    expected_findings,
    expected_segments,
    segment_mask,
    segment_slices,
    world_to_pixel,
)
from tests.viewer.ohif_page import (
    ANNOTATIONS_JS,
    MEASUREMENTS_JS,
    MEASUREMENTS_PANEL_JS,
    SEGMENTATION_PANEL,
    SEGMENTATIONS_JS,
    SR_DISPLAY_SET_JS,
    TRACKED_MEASUREMENTS_PANEL,
    OhifPage,
)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

SR_DISPLAY_TOOL = "DICOMSRDisplay"  # OHIF's read-only drawing of an SR's image regions
COLOUR_TOLERANCE = 2  # per 8-bit channel: CIELab -> sRGB rounding differs by one or two
WAIT_S = 60
# A line's end points sit on the nodule's edge. The axes are measured on the outline refined
# on the CT values, the SEG holds the model's voxels: around a speck of a few pixels the two
# differ by up to a pixel, so up to 2 pixels from the segment's nearest pixel centre. The
# line's middle lies inside, give or take the half pixel between SCOORD's pixel-corner
# origin and the pixel centres of the segment.
EDGE_TOLERANCE_PX = 2.0
INSIDE_TOLERANCE_PX = 1.0


def _open(page: OhifPage, study: ProcessedStudy) -> None:
    page.open_study(
        study.study_instance_uid,
        [study.ct_series_instance_uid, study.seg.SeriesInstanceUID, study.sr.SeriesInstanceUID],
    )


def test_seg_opens_with_every_segment_labelled_and_coloured(
    processed_study: ProcessedStudy, ohif_page: OhifPage, screenshots: Path
) -> None:
    study, page = processed_study, ohif_page
    segments = expected_segments(study.seg)
    _open(page, study)
    seg_display_set = page.display_set_uid(study.seg.SeriesInstanceUID)
    page.open_series("SEG", str(study.seg.SeriesDescription))
    state = page.wait_for(
        f"const s = (() => {{ {SEGMENTATIONS_JS} }})()"
        ".find(x => x.segmentationId === arguments[0]);"
        "return s && s.shownInActiveViewport && s.segments.length >= arguments[1] && s;",
        WAIT_S,
        "the SEG loaded as a segmentation shown in the viewport",
        seg_display_set,
        len(segments),
    )
    page.activate_panel(SEGMENTATION_PANEL)
    # As a user would: pick the first nodule in the panel, the viewport jumps to it.
    nodule = next((s for s in segments if s.label != segments[0].label), segments[0])
    page.click_panel_row(nodule.label)
    time.sleep(1)  # the jump and the re-render
    page.screenshot(screenshots / "ohif-seg.png")

    shown = {s["segmentIndex"]: s for s in state["segments"]}
    assert sorted(shown) == [s.number for s in segments], (
        f"expected OHIF to load the segments {[s.number for s in segments]}, found {sorted(shown)}"
    )
    for segment in segments:
        loaded = shown[segment.number]
        assert loaded["label"] == segment.label, (
            f"expected segment {segment.number} labelled '{segment.label}' in OHIF, "
            f"found '{loaded['label']}'"
        )
        assert segment.rgb is not None, (
            f"expected a RecommendedDisplayCIELabValue on segment {segment.number} "
            f"('{segment.label}'), found none: OHIF then picks its own colour"
        )
        colour = loaded["color"][:3]
        differences = [abs(a - b) for a, b in zip(colour, segment.rgb, strict=True)]
        assert max(differences) <= COLOUR_TOLERANCE, (
            f"expected segment {segment.number} ('{segment.label}') drawn in RGB {segment.rgb} "
            f"(its RecommendedDisplayCIELabValue), found {colour}"
        )


def _numbers(texts: list[str]) -> list[float]:
    return [float(n) for text in texts for n in re.findall(r"-?\d+(?:\.\d+)?", text)]


def _shows_value(numbers: list[float], value: float) -> bool:
    """A value shown rounded to the viewer's precision (at least one decimal)."""
    return any(abs(n - value) <= 0.05 + 1e-9 for n in numbers)


def _assert_finding_parsed(finding: ExpectedFinding, parsed: dict[str, Any]) -> None:
    """OHIF's SR display set has the finding on its key slice with every value of the SR."""
    assert parsed["loaded"], (
        f"expected OHIF to place '{finding.name}' on an image of the study, found it unplaced "
        f"(its image region references {sorted(finding.region_sop_instance_uids)})"
    )
    assert parsed["ReferencedSOPInstanceUID"] in finding.region_sop_instance_uids, (
        f"expected '{finding.name}' on its key slice {sorted(finding.region_sop_instance_uids)}, "
        f"found it on {parsed['ReferencedSOPInstanceUID']}"
    )
    for value in finding.values:
        assert value.ohif_label() in parsed["labels"], (
            f"expected OHIF to show '{value.meaning}' = {value.ohif_label()['value']} for "
            f"'{finding.name}', found {parsed['labels']}"
        )


def _assert_drawn_on_segment(
    study: ProcessedStudy, finding: ExpectedFinding, key_slice: str, points: list[list[float]]
) -> None:
    """The drawing lies on the finding's segment on that slice: its end points on the
    segment's edge at most, the middle of its first line inside."""
    image = study.ct[key_slice]
    pixels = [world_to_pixel(image, p) for p in points]
    assert len(pixels) >= 2, f"expected a line drawn for '{finding.name}', found {points}"
    middle = ((pixels[0][0] + pixels[1][0]) / 2, (pixels[0][1] + pixels[1][1]) / 2)
    for number in finding.segment_numbers:
        mask = segment_mask(study.seg, key_slice, number)
        off = [
            (round(c, 1), round(r, 1))
            for c, r in pixels
            if distance_to_mask(mask, c, r) > EDGE_TOLERANCE_PX
        ]
        assert not off, (
            f"expected the drawing of '{finding.name}' on its segment {number}, found the "
            f"points (column, row) {off} off it"
        )
        assert distance_to_mask(mask, *middle) <= INSIDE_TOLERANCE_PX, (
            f"expected the middle of the line of '{finding.name}' inside its segment {number}, "
            f"found it at {middle}, {distance_to_mask(mask, *middle):.1f} pixels away"
        )


def _assert_finding_listed(finding: ExpectedFinding, measurement: dict[str, Any]) -> None:
    """A measurement-service entry (a Measurements panel row) for the finding: on its key
    slice, with its long and short axes."""
    assert measurement["SOPInstanceUID"] in finding.region_sop_instance_uids, (
        f"expected the measurement '{finding.name}' on its key slice "
        f"{sorted(finding.region_sop_instance_uids)}, found {measurement['SOPInstanceUID']}"
    )
    shown = _numbers((measurement["displayText"] or {}).get("primary", []))
    for concept in (LONG_AXIS, SHORT_AXIS):
        expected = finding.value_of(concept)
        assert expected is not None, f"expected a {concept} value for '{finding.name}' in the SR"
        assert _shows_value(shown, expected.value), (
            f"expected '{finding.name}' listed with {expected.meaning} {expected.value} "
            f"{expected.unit}, found {measurement['displayText']}"
        )


def _lists(finding: ExpectedFinding, measurement: dict[str, Any]) -> bool:
    try:
        _assert_finding_listed(finding, measurement)
    except AssertionError:
        return False
    return True


def test_sr_findings_listed_with_values_and_drawn_on_key_slices(
    processed_study: ProcessedStudy, ohif_page: OhifPage, screenshots: Path, tmp_path: Path
) -> None:
    study, page = processed_study, ohif_page
    findings = expected_findings(study.sr)
    assert findings, "expected at least one finding in the pipeline's SR, found none"
    unplaced = [f.name for f in findings if not f.has_region]
    sr_series = str(study.sr.SeriesInstanceUID)
    _open(page, study)
    page.open_series("SR", str(study.sr.SeriesDescription))
    try:
        # Loaded, and hydrated into the measurement service (OHIF then jumps to the first).
        page.wait_for(
            f"const d = (() => {{ {SR_DISPLAY_SET_JS} }})();"
            "return d && d.isLoaded && (d.isHydrated || !d.isRehydratable) && d;",
            WAIT_S,
            "OHIF to load the SR",
            sr_series,
        )
        page.wait_for(
            f"return (() => {{ {MEASUREMENTS_JS} }})().length >= arguments[0];",
            WAIT_S,
            f"{len(findings)} measurements in OHIF's measurement service",
            len(findings),
        )
        page.activate_panel(TRACKED_MEASUREMENTS_PANEL)
        panel = page.wait_for(
            f"const p = (() => {{ {MEASUREMENTS_PANEL_JS} }})();"
            "return p && p.rows.length >= arguments[0] && p;",
            WAIT_S,
            f"{len(findings)} rows in the Measurements panel",
            len(findings),
        )
    except AssertionError as failure:
        page.screenshot(tmp_path / "ohif-sr-failed.png")
        hint = (
            f"; the SR's findings without an image region (SCOORD/SCOORD3D), which OHIF "
            f"cannot place: {unplaced}"
            if unplaced
            else ""
        )
        raise AssertionError(f"{failure}{hint}") from None
    page.click_measurement_row(0)  # as a user would: to the first finding's key slice
    time.sleep(1)  # the jump and the re-render
    page.screenshot(screenshots / "ohif-sr.png")
    sr_state = page.js(SR_DISPLAY_SET_JS, sr_series)
    annotations = page.js(ANNOTATIONS_JS)
    measurements = page.js(MEASUREMENTS_JS)

    # 1. OHIF's reading of the SR: each finding on its key slice, with all its values.
    parsed = {m["TrackingUniqueIdentifier"]: m for m in sr_state["measurements"]}
    assert sorted(parsed) == sorted(f.tracking_uid for f in findings), (
        f"expected OHIF to read the findings {[f.name for f in findings]}, "
        f"found {[m['TrackingIdentifier'] for m in sr_state['measurements']]}"
    )
    for finding in findings:
        _assert_finding_parsed(finding, parsed[finding.tracking_uid])

    # 2. Drawn: the SR's image region of each finding on the key slice's image, a slice its
    # segment in the SEG covers.
    drawn = {a["annotationUID"]: a for a in annotations if a["toolName"] == SR_DISPLAY_TOOL}
    covered = segment_slices(study.seg)
    for finding in findings:
        assert finding.segment_numbers, (
            f"expected '{finding.name}' to reference its segment in the SEG, found no reference"
        )
        for number in finding.segment_numbers:
            outside = finding.region_sop_instance_uids - covered.get(number, set())
            assert not outside, (
                f"expected the key slice of '{finding.name}' among the slices its segment "
                f"{number} covers, found {sorted(outside)} outside them"
            )
        annotation = drawn.get(finding.tracking_uid)
        assert annotation is not None, (
            f"expected '{finding.name}' drawn ({SR_DISPLAY_TOOL}), found drawings of "
            f"{sorted(drawn)}"
        )
        image_id = annotation["referencedImageId"] or ""
        key_slices = [u for u in finding.region_sop_instance_uids if f"/instances/{u}/" in image_id]
        assert key_slices, (
            f"expected '{finding.name}' drawn on its key slice "
            f"{sorted(finding.region_sop_instance_uids)}, found it on {image_id}"
        )
        _assert_drawn_on_segment(study, finding, key_slices[0], annotation["points"])

    # 3. Listed: one measurement per finding, on its key slice, with its values. OHIF names a
    # row after a Comment (DCM 121106) only, which TID 1501 does not have (PixelMed flags it):
    # our rows carry the finding type ("Nodule"), numbered, so they are matched by place and
    # values, not by name.
    assert len(measurements) == len(findings), (
        f"expected {len(findings)} measurements in OHIF's measurement service, found "
        f"{[(m['label'], m['toolName']) for m in measurements]}"
    )
    unmatched = list(measurements)
    for finding in findings:
        listed = [m for m in unmatched if _lists(finding, m)]
        assert listed, (
            f"expected '{finding.name}' listed on its key slice with its long and short axis, "
            f"found {[(m['SOPInstanceUID'], m['displayText']) for m in unmatched]}"
        )
        _assert_finding_listed(finding, listed[0])
        unmatched.remove(listed[0])

    # 4. The panel a radiologist reads: "Measurements (N)" and one row per finding.
    assert f"Measurements ({len(findings)})" in panel["text"], panel["text"]
    assert len(panel["rows"]) == len(findings), (
        f"expected {len(findings)} panel rows, found {panel['rows']}"
    )


def test_pipeline_delivers_the_viewer_forms_to_the_pacs_that_takes_them(
    processed_study: ProcessedStudy, tmp_path: Path
) -> None:
    """No browser: the real pipeline's presentation state, key images and key objects, sent
    by C-STORE to the PACS whose destination takes those forms (and not SEG and SR): in the
    study, dciodvfy-clean, and each finding of the SR on its key slice in every form."""
    study = processed_study
    forms = study.viewer_forms
    assert sorted(forms) == sorted(LEGACY_FORMS), (
        f"expected only {LEGACY_FORMS} in the legacy PACS, found {sorted(forms)}"
    )
    findings = expected_findings(study.sr)
    key_slices = {f.tracking_uid: f.region_sop_instance_uids for f in findings}
    on_key_slices = set().union(*key_slices.values())
    iods = {
        "PR": "GrayscaleSoftcopyPresentationState",
        "OT": "SCImage",
        "KO": "KeyObjectSelectionDocument",
    }
    for modality, datasets in forms.items():
        for n, ds in enumerate(datasets):
            assert ds.StudyInstanceUID == study.study_instance_uid, modality
            path = tmp_path / f"{modality}-{n}.dcm"
            ds.save_as(path, enforce_file_format=True)
            assert dciodvfy_errors(path) == (iods[modality], []), modality

    (gsps,) = forms["PR"]
    referenced = {
        image.ReferencedSOPInstanceUID
        for series in gsps.ReferencedSeriesSequence
        for image in series.ReferencedImageSequence
    }
    assert referenced == set(study.ct), "expected the presentation state over the CT series"
    texts = {
        text.TrackingUID: annotation.ReferencedImageSequence[0].ReferencedSOPInstanceUID
        for annotation in gsps.GraphicAnnotationSequence
        for text in annotation.get("TextObjectSequence", [])
    }
    assert sorted(texts) == sorted(key_slices), "expected one text per finding of the SR"
    for finding in findings:
        assert texts[finding.tracking_uid] in finding.region_sop_instance_uids, finding.name

    captures = forms["OT"]
    assert len(captures) == len(findings)
    for sc in captures:
        assert sc.ImageType[0] == "DERIVED" and sc.BurnedInAnnotation == "YES"
        assert "NOT FOR PRIMARY DIAGNOSIS" in sc.ImageComments
    sources = {sc.SourceImageSequence[0].ReferencedSOPInstanceUID for sc in captures}
    assert sources == on_key_slices

    (kos,) = forms["KO"]
    flagged = {
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for item in kos.ContentSequence
        if item.ValueType == "IMAGE"
    }
    assert flagged == on_key_slices
