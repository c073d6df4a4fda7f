"""Findings to a binary DICOM Segmentation of the source series (highdicom)."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from numpy.typing import NDArray

from gateway.results import codes
from gateway.results.config import ResultsSettings
from gateway.results.identity import (
    ResultUIDs,
    algorithm_identification,
    contributing_equipment,
    software_versions,
)
from gateway.results.source import SourceSeries
from workers.inference.findings import LABEL_LUNG, Findings
from workers.inference.postprocess import nodule_components


def nodule_tracking_id(index: int) -> str:
    return f"Nodule {index}"


def segment_masks(findings: Findings) -> list[tuple[str, NDArray[np.bool_]]]:
    """(structure, mask) per segment to write, in segment number order: the lung, then each
    nodule by its finding index. Empty structures are left out."""
    segments: list[tuple[str, NDArray[np.bool_]]] = []
    lung = findings.labels == LABEL_LUNG
    if lung.any():
        segments.append(("lung", lung))
    if findings.nodules:
        components = nodule_components(findings.labels)
        for nodule in findings.nodules:
            segments.append((f"nodule-{nodule.index}", components == nodule.component_label))
    return segments


def _description(
    number: int, structure: str, findings: Findings, uids: ResultUIDs
) -> hd.seg.SegmentDescription:
    algorithm = algorithm_identification(findings.segmentation_model)
    if structure == "lung":
        return hd.seg.SegmentDescription(
            segment_number=number,
            segment_label="Lung",
            segmented_property_category=codes.ANATOMICAL_STRUCTURE,
            segmented_property_type=codes.LUNG,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=uids.tracking(structure),
            tracking_id="Lung",
        )
    index = int(structure.removeprefix("nodule-"))
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=nodule_tracking_id(index),
        segmented_property_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        segmented_property_type=codes.NODULE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=uids.tracking(structure),
        tracking_id=nodule_tracking_id(index),
        anatomic_regions=[codes.LUNG],
    )


def build_segmentation(
    source: SourceSeries, findings: Findings, uids: ResultUIDs, settings: ResultsSettings
) -> tuple[hd.seg.Segmentation, list[str]] | None:
    """The SEG and its structures by segment number (1-based), or None when the models
    found nothing to outline (no lung, no nodule)."""
    segments = segment_masks(findings)
    if not segments:
        return None
    # Segments never overlap (one label per voxel), so a label map of segment numbers says
    # it all: (frames, rows, columns), frames in the order of source.datasets. highdicom
    # checks a 4D stack for overlaps with a slow sum over the segment axis (1 s per 100
    # slices of 512x512); a label map skips that.
    dtype = np.uint8 if len(segments) < 256 else np.uint16
    pixel_array = np.zeros(findings.labels.shape, dtype=dtype)
    for number, (_, mask) in enumerate(segments, start=1):
        pixel_array[mask] = number
    seg = hd.seg.Segmentation(
        source_images=list(source.datasets),
        pixel_array=pixel_array,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            _description(number, structure, findings, uids)
            for number, (structure, _) in enumerate(segments, start=1)
        ],
        series_instance_uid=uids.seg_series,
        series_number=settings.seg_series_number,
        sop_instance_uid=uids.seg_instance,
        instance_number=1,
        manufacturer=settings.manufacturer,
        manufacturer_model_name=settings.manufacturer_model_name,
        # highdicom types it `str | tuple[str]`, but pydicom warns on a tuple; a list is right
        software_versions=list(software_versions(findings)),  # type: ignore[arg-type]
        device_serial_number=settings.device_serial_number,
        content_label="AI_NODULES",
        content_description="Lung and lung nodules (AI)",
        series_description="AI lung nodule segmentation",
        # Frames without any segment are left out; each kept frame carries its own plane
        # position and source image reference, so viewers place it correctly.
        omit_empty_frames=True,
        contributing_equipment=contributing_equipment(settings, findings),
    )
    return seg, [structure for structure, _ in segments]
