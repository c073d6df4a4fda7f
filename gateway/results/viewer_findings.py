"""What the viewer forms (presentation state, key images, key object selection) show of each
reported finding, in the source images' pixel coordinates.

A reported finding is a segment finding whose segment the pipeline reports (`report = true`)
and that has voxels, or a localised finding on a projection image. Its key image is the slice
its axes were measured on (else the slice where it is largest), or the image its point lies
on. Coordinates are (column, row), (0, 0) at the top left corner of the top left pixel
(GSPS PIXEL units).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from gateway.pipelines.description import SegmentDescription
from gateway.pipelines.findings import PointFinding, SegmentFinding
from gateway.pipelines.measure import label_components, segment_mask
from gateway.results.config import ResultsSettings
from gateway.results.declared import DeclaredFindings
from gateway.results.image_plane import image_coordinates
from gateway.results.outline import mask_outlines
from gateway.results.segmentation import segment_title
from gateway.results.source import SourceSeries


@dataclass(frozen=True)
class SliceGraphics:
    """What one finding shows on one image."""

    slice_index: int
    """Index in the source series (the findings' slice order)."""
    outlines: tuple[NDArray[np.float64], ...] = ()
    """Closed polylines, (N, 2) (column, row), last point = first."""
    lines: tuple[NDArray[np.float64], ...] = ()
    """Measured axes: (2, 2) end points (column, row), long axis first."""
    circles: tuple[tuple[float, float, float], ...] = ()
    """(column, row, radius) in pixels."""

    def points(self) -> NDArray[np.float64]:
        """Every point drawn (circles by their bounding box corners)."""
        parts = [*self.outlines, *self.lines]
        parts.extend(np.array([[c - r, w - r], [c + r, w + r]]) for c, w, r in self.circles)
        return np.vstack(parts) if parts else np.zeros((0, 2))


@dataclass(frozen=True)
class ViewerFinding:
    key: str
    """Structure key ('nodule-1'): the tracking UID derives from it."""
    title: str
    """'Nodule 1'."""
    kind: str
    """The segment's or localisation's name ('nodule'): one graphic layer per kind."""
    kind_title: str
    colour: tuple[int, int, int]
    values: str
    """Its measurements as text, '6.2 x 4.5 mm, mean 5.4 mm, 66 mm3' ('' if none)."""
    key_slice: int
    slices: tuple[SliceGraphics, ...]
    """In slice order; the key slice among them."""

    @property
    def label(self) -> str:
        return f"{self.title}: {self.values}" if self.values else self.title

    @property
    def on_key_slice(self) -> SliceGraphics:
        return next(s for s in self.slices if s.slice_index == self.key_slice)


def copy_anatomy(image: Dataset, into: Dataset) -> None:
    """The source's Body Part Examined and Laterality on a new series (General Series).
    Without either, Laterality stays empty (type 2C: unknown), which dciodvfy accepts."""
    for keyword in ("BodyPartExamined", "Laterality"):
        if image.get(keyword):
            setattr(into, keyword, image.get(keyword))
    if "BodyPartExamined" not in into and "Laterality" not in into:
        into.Laterality = None


def _format_mm(value: float) -> str:
    return f"{value:.1f} mm"


def measurement_text(segment: SegmentFinding, declared: SegmentDescription) -> str:
    """The declared measurements of a finding as a radiologist writes them: axes as
    'long x short mm', then the mean and longest diameter, then the volume."""
    value = {m.name: m.value for m in segment.measurements if m.name in declared.measurements}
    parts = []
    if "long_axis" in value and "short_axis" in value:
        parts.append(f"{value['long_axis']:.1f} x {_format_mm(value['short_axis'])}")
    elif "long_axis" in value:
        parts.append(f"long axis {_format_mm(value['long_axis'])}")
    elif "short_axis" in value:
        parts.append(f"short axis {_format_mm(value['short_axis'])}")
    if "mean_diameter" in value:
        parts.append(f"mean {_format_mm(value['mean_diameter'])}")
    if "longest_diameter" in value:
        parts.append(f"max {_format_mm(value['longest_diameter'])}")
    if "volume" in value:
        parts.append(f"{value['volume']:.0f} mm3")
    return ", ".join(parts)


def _reported_masks(item: DeclaredFindings) -> Iterator[tuple[SegmentFinding, NDArray[np.bool_]]]:
    """Each reported segment finding with its voxels, as `segment_mask` finds them, but with
    one labelling of a label's components for all its findings (one labelling of a
    300-slice 512x512 volume takes about 1.3 s)."""
    labels = item.findings.labels
    components: dict[int, NDArray[np.int32]] = {}
    for segment in item.findings.segments:
        if not item.description.segment(segment.label).report:
            continue
        if segment.index == 0:
            yield segment, segment_mask(labels, segment)
            continue
        if segment.label not in components:
            components[segment.label] = label_components(labels, segment.label)
        yield segment, np.asarray(components[segment.label] == segment.component_label)


def _segment_finding(
    segment: SegmentFinding, mask: NDArray[np.bool_], source: SourceSeries, item: DeclaredFindings
) -> ViewerFinding | None:
    declared = item.description.segment(segment.label)
    covered = np.flatnonzero(mask.any(axis=(1, 2)))
    if len(covered) == 0:
        return None
    axes = segment.axial_axes
    if axes is not None:
        key_slice = axes.slice_index
        uid = str(source.datasets[key_slice].SOPInstanceUID)
        if axes.sop_instance_uid and axes.sop_instance_uid != uid:
            raise ValueError(
                f"finding {segment.key}: expected its axes on slice {key_slice} ({uid}), "
                f"found them on {axes.sop_instance_uid}"
            )
    else:
        key_slice = int(covered[np.argmax(mask[covered].sum(axis=(1, 2)))])
    slices = []
    for index in sorted({*covered.tolist(), key_slice}):
        lines: tuple[NDArray[np.float64], ...] = ()
        if axes is not None and index == key_slice:
            image = source.datasets[index]
            lines = tuple(
                image_coordinates(image, np.array(points, dtype=np.float64))
                for points in (axes.long_axis_points, axes.short_axis_points)
            )
        slices.append(SliceGraphics(int(index), tuple(mask_outlines(mask[index])), lines))
    return ViewerFinding(
        key=segment.key,
        title=segment_title(item.description, segment),
        kind=declared.name,
        kind_title=declared.title,
        colour=declared.colour,
        values=measurement_text(segment, declared),
        key_slice=key_slice,
        slices=tuple(slices),
    )


def _point_finding(
    point: PointFinding, source: SourceSeries, item: DeclaredFindings, settings: ResultsSettings
) -> ViewerFinding:
    localisation = item.description.localisation
    assert localisation is not None and localisation.name == point.name
    uids = [str(ds.SOPInstanceUID) for ds in source.datasets]
    if point.sop_instance_uid not in uids:
        raise ValueError(
            f"finding {point.key}: expected its image {point.sop_instance_uid} among the "
            f"source images, found {uids}"
        )
    index = uids.index(point.sop_instance_uid)
    # the finding's row and column count from the first pixel's centre
    circle = (point.column + 0.5, point.row + 0.5, point.radius_px)
    return ViewerFinding(
        key=point.key,
        title=f"{localisation.title} {point.index}",
        kind=localisation.name,
        kind_title=localisation.title,
        colour=settings.point_colour,
        values=f"probability {point.probability:.2f}",
        key_slice=index,
        slices=(SliceGraphics(index, circles=(circle,)),),
    )


def viewer_findings(
    source: SourceSeries, item: DeclaredFindings, settings: ResultsSettings
) -> list[ViewerFinding]:
    """The reported findings, in the findings' order (segments, then localised points)."""
    found = []
    for segment, mask in _reported_masks(item):
        finding = _segment_finding(segment, mask, source, item)
        if finding is not None:
            found.append(finding)
    found.extend(_point_finding(p, source, item, settings) for p in item.findings.point_findings)
    return found
