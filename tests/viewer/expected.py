"""What a viewer must show, read from the delivered SEG and SR with pydicom: the segments
(number, label, display colour) and the SR's findings (name, tracking UID, key slice, values).
Read independently of gateway.results, so the browser test checks the files, not the code
that wrote them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

IMAGING_MEASUREMENTS = ("DCM", "126010")
MEASUREMENT_GROUP = ("DCM", "125007")
TRACKING_IDENTIFIER = ("DCM", "112039")
TRACKING_UNIQUE_IDENTIFIER = ("DCM", "112040")
COMMENT = ("DCM", "121106")
LONG_AXIS = ("SCT", "103339001")
SHORT_AXIS = ("SCT", "103340004")
SPATIAL_VALUE_TYPES = ("SCOORD", "SCOORD3D")
# "Cornerstone3DTools@^0.1.0:Bidirectional...": a tracking identifier naming a viewer's tool.
TOOL_TAG = re.compile(r"^[A-Za-z0-9]+@[^:]*:")


@dataclass(frozen=True)
class ExpectedSegment:
    number: int
    label: str
    rgb: tuple[int, int, int] | None  # from RecommendedDisplayCIELabValue, if the SEG has one


@dataclass(frozen=True)
class ExpectedValue:
    concept: tuple[str, str]  # (coding scheme designator, code value)
    meaning: str
    value: float
    unit: str  # UCUM code value, as OHIF prints it

    def ohif_label(self) -> dict[str, str]:
        """How OHIF's SR parser lists a NUM: the concept's meaning, the value with two
        decimals (JavaScript toFixed(2)) and the unit's code value."""
        return {"label": self.meaning, "value": f"{self.value:.2f} {self.unit}"}


@dataclass
class ExpectedFinding:
    """One tracked finding of the SR: its measurement groups merged by Tracking Unique
    Identifier (as OHIF merges them)."""

    tracking_uid: str
    tracking_identifiers: list[str]  # of its groups, in document order
    comment: str | None = None
    values: list[ExpectedValue] = field(default_factory=list)
    # SOP Instance UIDs the finding's image regions (SCOORD) lie on: its key slice(s).
    region_sop_instance_uids: set[str] = field(default_factory=set)
    has_region: bool = False  # any SCOORD / SCOORD3D in its groups
    # Segments of the SEG the finding references (its volumetric group's Referenced Segment).
    segment_numbers: set[int] = field(default_factory=set)

    @property
    def name(self) -> str:
        """The finding's name for a reader ("Nodule 1"): its groups' Comment if there is one
        (OHIF labels a measurement with it), else the first tracking identifier that is not a
        viewer tool tag ("Cornerstone3DTools@^0.1.0:Bidirectional:Nodule 1"), else the part
        of the tag after its last colon."""
        if self.comment:
            return self.comment
        readable = [t for t in self.tracking_identifiers if not TOOL_TAG.match(t)]
        if readable:
            return readable[0]
        return self.tracking_identifiers[0].rsplit(":", 1)[-1]

    def value_of(self, concept: tuple[str, str]) -> ExpectedValue | None:
        return next((v for v in self.values if v.concept == concept), None)


def _code(item: Dataset, attribute: str = "ConceptNameCodeSequence") -> tuple[str, str]:
    code = item[attribute][0]
    return str(code.CodingSchemeDesignator), str(code.CodeValue)


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | MultiValue) else [value]


def _children(item: Dataset) -> list[Dataset]:
    return list(item.get("ContentSequence", []))


def cielab_to_rgb(dicom_lab: tuple[int, int, int]) -> tuple[int, int, int]:
    """DICOM CIELab (PS3.3 C.10.7.1.1: 0..65535 scaled L*, a*, b*; D65) to 8-bit sRGB."""
    lightness = dicom_lab[0] * 100.0 / 65535.0
    a = dicom_lab[1] * 255.0 / 65535.0 - 128.0
    b = dicom_lab[2] * 255.0 / 65535.0 - 128.0
    fy = (lightness + 16.0) / 116.0
    fx, fz = fy + a / 500.0, fy - b / 200.0

    def f_inverse(t: float) -> float:
        return t**3 if t > 6.0 / 29.0 else 3 * (6.0 / 29.0) ** 2 * (t - 4.0 / 29.0)

    x, y, z = 0.950456 * f_inverse(fx), f_inverse(fy), 1.088754 * f_inverse(fz)
    linear = (
        3.2406 * x - 1.5372 * y - 0.4986 * z,
        -0.9689 * x + 1.8758 * y + 0.0415 * z,
        0.0557 * x - 0.2040 * y + 1.0570 * z,
    )

    def gamma(c: float) -> int:
        c = min(max(c, 0.0), 1.0)
        encoded = 12.92 * c if c <= 0.0031308 else 1.055 * c ** (1 / 2.4) - 0.055
        return round(encoded * 255)

    r, g, b_ = (gamma(c) for c in linear)
    return r, g, b_


def expected_segments(seg: Dataset) -> list[ExpectedSegment]:
    segments = []
    for item in seg.SegmentSequence:
        lab = item.get("RecommendedDisplayCIELabValue")
        rgb = cielab_to_rgb((int(lab[0]), int(lab[1]), int(lab[2]))) if lab else None
        segments.append(ExpectedSegment(int(item.SegmentNumber), str(item.SegmentLabel), rgb))
    return segments


def segment_slices(seg: Dataset) -> dict[int, set[str]]:
    """Segment number -> SOP Instance UIDs of the source slices its frames cover."""
    slices: dict[int, set[str]] = {}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        for derivation in frame.get("DerivationImageSequence", []):
            for source in derivation.SourceImageSequence:
                slices.setdefault(number, set()).add(str(source.ReferencedSOPInstanceUID))
    return slices


def _descendants(item: Dataset) -> Iterator[Dataset]:
    for child in _children(item):
        yield child
        yield from _descendants(child)


def _measurement_groups(sr: Dataset) -> Iterator[Dataset]:
    for item in _children(sr):
        if item.ValueType == "CONTAINER" and _code(item) == IMAGING_MEASUREMENTS:
            for group in _children(item):
                if group.ValueType == "CONTAINER" and _code(group) == MEASUREMENT_GROUP:
                    yield group


def _region_sop_instance_uids(item: Dataset) -> Iterator[str]:
    """SOP Instance UIDs an SCOORD item (or anything under it) is selected from."""
    for reference in item.get("ReferencedSOPSequence", []):
        yield str(reference.ReferencedSOPInstanceUID)
    for child in _children(item):
        yield from _region_sop_instance_uids(child)


def _spatial_items(item: Dataset) -> Iterator[tuple[Dataset, list[Dataset]]]:
    """Each SCOORD / SCOORD3D under `item`, with its sibling IMAGE items: an SCOORD3D has
    no image of its own, its key slice is the IMAGE it is listed with."""
    children = _children(item)
    images = [c for c in children if c.ValueType == "IMAGE"]
    for child in children:
        if child.ValueType in SPATIAL_VALUE_TYPES:
            yield child, images
        yield from _spatial_items(child)


def expected_findings(sr: Dataset) -> list[ExpectedFinding]:
    """The SR's findings in document order, groups sharing a Tracking Unique Identifier merged.
    Values: the NUM items directly in the groups (those a viewer lists for the finding)."""
    findings: dict[str, ExpectedFinding] = {}
    for group in _measurement_groups(sr):
        items = _children(group)
        uid = next(
            (str(i.UID) for i in items if _code(i) == TRACKING_UNIQUE_IDENTIFIER),
            None,
        )
        identifier = next((str(i.TextValue) for i in items if _code(i) == TRACKING_IDENTIFIER), "")
        if uid is None:
            raise AssertionError(
                f"expected a Tracking Unique Identifier in every measurement group, found none "
                f"in the group '{identifier}'"
            )
        finding = findings.setdefault(uid, ExpectedFinding(uid, []))
        finding.tracking_identifiers.append(identifier)
        for item in items:
            if item.ValueType == "TEXT" and _code(item) == COMMENT and finding.comment is None:
                finding.comment = str(item.TextValue)
            if item.ValueType == "NUM" and "MeasuredValueSequence" in item:
                measured = item.MeasuredValueSequence[0]
                finding.values.append(
                    ExpectedValue(
                        _code(item),
                        str(item.ConceptNameCodeSequence[0].CodeMeaning),
                        float(measured.NumericValue),
                        str(measured.MeasurementUnitsCodeSequence[0].CodeValue),
                    )
                )
        for item in _descendants(group):
            if item.ValueType == "IMAGE":
                for reference in item.ReferencedSOPSequence:
                    if "ReferencedSegmentNumber" in reference:
                        finding.segment_numbers.update(
                            int(n) for n in _as_list(reference.ReferencedSegmentNumber)
                        )
        for spatial, images in _spatial_items(group):
            finding.has_region = True
            sources = [spatial] if spatial.ValueType == "SCOORD" else images
            for source in sources:
                finding.region_sop_instance_uids.update(_region_sop_instance_uids(source))
    return list(findings.values())


def segment_mask(seg: Dataset, sop_instance_uid: str, segment_number: int) -> NDArray[np.bool_]:
    """The segment's pixels on one source slice (rows x columns)."""
    segmentation = hd.seg.Segmentation.from_dataset(seg)
    pixels = segmentation.get_pixels_by_source_instance(
        [sop_instance_uid], segment_numbers=[segment_number], assert_missing_frames_are_empty=True
    )
    return np.asarray(pixels[0, :, :, 0] > 0)


def world_to_pixel(image: Dataset, point: list[float]) -> tuple[float, float]:
    """A patient-coordinate point (mm) on an image's plane to (column, row) pixel indices."""
    origin = np.asarray(image.ImagePositionPatient, dtype=float)
    orientation = np.asarray(image.ImageOrientationPatient, dtype=float)
    row_spacing, column_spacing = (float(v) for v in image.PixelSpacing)
    offset = np.asarray(point, dtype=float) - origin
    return (
        float(offset @ orientation[:3] / column_spacing),
        float(offset @ orientation[3:] / row_spacing),
    )


def distance_to_mask(mask: NDArray[np.bool_], column: float, row: float) -> float:
    """Pixels from (column, row) to the nearest pixel of the mask (0 inside it)."""
    rows, columns = np.nonzero(mask)
    if rows.size == 0:
        return float("inf")
    return float(np.min(np.hypot(columns - column, rows - row)))
