"""Findings to a binary DICOM Segmentation of the source series (highdicom), with the
segments, codes, labels and colours their pipeline declares."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from numpy.typing import NDArray

from gateway.pipelines.description import PipelineDescription
from gateway.pipelines.findings import PipelineFindings, SegmentFinding
from gateway.pipelines.measure import boxed_components, segment_mask
from gateway.results.config import ResultsSettings
from gateway.results.declared import ConvertibleFindings, DeclaredFindings, code, declared
from gateway.results.identity import (
    ResultUIDs,
    algorithm_identification,
    contributing_equipment,
    model_of,
    software_versions,
)
from gateway.results.source import SourceSeries


def segment_title(description: PipelineDescription, segment: SegmentFinding) -> str:
    """'Lung' for a whole label, 'Nodule 1' for a component: segment label and tracking ID."""
    title = description.segment(segment.label).title
    return title if segment.index == 0 else f"{title} {segment.index}"


def segment_masks(
    findings: PipelineFindings | ConvertibleFindings,
    description: PipelineDescription | None = None,
) -> list[tuple[str, NDArray[np.bool_]]]:
    """(structure, mask) per segment to write, in segment number order (the findings'
    order: the description's segments, components by decreasing volume). Empty ones are
    left out."""
    item = declared(findings, description)
    out = []
    for segment in item.findings.segments:
        mask = segment_mask(item.findings.labels, segment)
        if mask.any():
            out.append((segment.key, mask))
    return out


def segment_number_map(
    labels: NDArray[np.uint8], segments: Sequence[SegmentFinding]
) -> tuple[NDArray[np.uint8] | NDArray[np.uint16], list[SegmentFinding]]:
    """The segments with voxels, numbered from 1 in the findings' order, and the map of
    their numbers (0: none), the voxels `segment_mask` finds. Segments never overlap (one
    label per voxel), so such a map says it all, and highdicom skips its overlap check of a
    4D stack (a sum over the segment axis: 1 s per 100 slices of 512x512). A component is
    written inside its label's box (one labelling per label), not with whole-volume masks:
    a nodule is a few thousand voxels of 26 million."""
    dtype = np.uint8 if len(segments) < 256 else np.uint16
    numbers = np.zeros(labels.shape, dtype=dtype)
    kept: list[SegmentFinding] = []
    boxes: dict[int, tuple[tuple[slice, ...], NDArray[np.int32]] | None] = {}
    for segment in segments:
        if segment.index == 0:
            mask = labels == segment.label
            if not mask.any():
                continue
            kept.append(segment)
            numbers[mask] = len(kept)
            continue
        if segment.label not in boxes:
            boxes[segment.label] = boxed_components(labels, segment.label)
        boxed = boxes[segment.label]
        if boxed is None:
            continue
        box, components = boxed
        local = components == segment.component_label
        if not local.any():
            continue
        kept.append(segment)
        numbers[box][local] = len(kept)
    return numbers, kept


def _description(
    number: int, segment: SegmentFinding, item: DeclaredFindings, uids: ResultUIDs
) -> hd.seg.SegmentDescription:
    declared_segment = item.description.segment(segment.label)
    assert item.description.segmentation is not None  # segments imply a segmentation
    model = model_of(item, item.description.segmentation.model)
    title = segment_title(item.description, segment)
    colour = declared_segment.colour
    region = declared_segment.anatomic_region
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=title,
        segmented_property_category=code(declared_segment.category),
        segmented_property_type=code(declared_segment.type),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm_identification(model),
        tracking_uid=uids.tracking(segment.key),
        tracking_id=title,
        anatomic_regions=None if region is None else [code(region)],
        display_color=hd.color.CIELabColor.from_rgb(*colour),
    )


def build_segmentation(
    source: SourceSeries,
    findings: PipelineFindings | ConvertibleFindings,
    uids: ResultUIDs,
    settings: ResultsSettings,
    description: PipelineDescription | None = None,
) -> tuple[hd.seg.Segmentation, list[str]] | None:
    """The SEG and its structures by segment number (1-based), or None when there is
    nothing to outline."""
    item = declared(findings, description)
    pixel_array, kept = segment_number_map(item.findings.labels, item.findings.segments)
    if not kept:
        return None
    report = item.description.report
    seg = hd.seg.Segmentation(
        source_images=list(source.datasets),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            _description(number, segment, item, uids)
            for number, segment in enumerate(kept, start=1)
        ],
        series_instance_uid=uids.seg_series,
        series_number=settings.seg_series_number,
        sop_instance_uid=uids.seg_instance,
        instance_number=1,
        manufacturer=settings.manufacturer,
        manufacturer_model_name=settings.manufacturer_model_name,
        # highdicom types it `str | tuple[str]`, but pydicom warns on a tuple; a list is right
        software_versions=list(software_versions(item.findings)),  # type: ignore[arg-type]
        device_serial_number=settings.device_serial_number,
        content_label=report.seg_content_label,
        content_description=report.seg_content_description,
        series_description=report.seg_series_description,
        # Frames without any segment are left out; each kept frame carries its own plane
        # position and source image reference, so viewers place it correctly.
        omit_empty_frames=True,
        contributing_equipment=contributing_equipment(settings, item),
    )
    return seg, [segment.key for segment in kept]
