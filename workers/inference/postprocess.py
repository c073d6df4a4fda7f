"""Label maps to measurements for the lung nodule pipeline (the generic work is in
gateway/pipelines/measure.py, shared with the results writers)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from gateway.pipelines.description import Refine
from gateway.pipelines.measure import (
    boxed_components,
    label_components,
    longest_diameter_mm,
    measure_segment,
)
from gateway.pipelines.refine import most_overlapping, refine_by_threshold
from workers.inference.findings import LABEL_LUNG, LABEL_NODULE, NoduleFinding
from workers.inference.series import Volume

__all__ = [
    "MIN_NODULE_VOLUME_MM3",
    "longest_diameter_mm",
    "measure_nodules",
    "nodule_components",
    "refine_nodules",
]

NODULE_MEASUREMENTS = ("volume", "longest_diameter", "long_axis", "short_axis")

# Smallest reported nodule: a sphere of 3 mm diameter (the pipeline file says the same).
MIN_NODULE_VOLUME_MM3 = 4.0 / 3.0 * np.pi * 1.5**3


def nodule_components(labels: NDArray[np.uint8]) -> NDArray[np.int32]:
    """Connected components (26-connected) of the nodule label: 0 outside, 1..n inside."""
    return label_components(labels, LABEL_NODULE)


def refine_nodules(labels: NDArray[np.uint8], volume: Volume, refine: Refine) -> NDArray[np.uint8]:
    """The label map with each nodule's outline refined on the source grid from its HU (see
    gateway/pipelines/refine.py); voxels the model called nodule and the CT does not become
    lung (the model finds nodules inside the lung)."""
    return refine_by_threshold(
        labels,
        volume.hu,
        LABEL_NODULE,
        (volume.slice_spacing, *volume.pixel_spacing),
        refine.threshold_hu,
        refine.margin_mm,
        refine.opening_mm,
        outside_label=LABEL_LUNG,
    )


def measure_nodules(
    labels: NDArray[np.uint8],
    volume: Volume,
    min_voxels: int = 3,
    min_volume_mm3: float = MIN_NODULE_VOLUME_MM3,
    resolution_mm: float | None = None,
) -> list[NoduleFinding]:
    """Connected components of the nodule label, largest first, with volume, longest
    diameter and long and short axis (see `measure_segment`). ``resolution_mm``: the grid
    the label map was made on (the U-Net's 2.4 mm); None for a label map at the pixels."""
    found = measure_segment(
        labels,
        LABEL_NODULE,
        "nodule",
        NODULE_MEASUREMENTS,
        volume.voxel_volume_mm3,
        volume.pixel_spacing,
        volume.index_to_patient,
        components=True,
        min_voxels=min_voxels,
        min_volume_mm3=min_volume_mm3,
        resolution_mm=resolution_mm,
        sop_instance_uids=volume.sop_instance_uids,
    )
    return [
        NoduleFinding(
            index=f.index,
            voxel_count=f.voxel_count,
            volume_mm3=_value(f.measurement("volume")),
            longest_diameter_mm=_value(f.measurement("longest_diameter")),
            centroid_patient_mm=f.centroid_patient_mm,
            centroid_index=f.centroid_index,
            slice_range=f.slice_range,
            component_label=f.component_label,
            axial_axes=f.axial_axes,
        )
        for f in found
    ]


def caliper_axes(
    nodules: list[NoduleFinding],
    labels: NDArray[np.uint8],
    refined: NDArray[np.uint8],
    volume: Volume,
) -> list[NoduleFinding]:
    """`nodules` (measured on the model's label map) with their axes, longest diameter and
    centre taken from the refined outline that overlaps each most (measured at the source
    pixels); a finding without one keeps its own."""
    model_components, refined_components = _components_in_common_box(labels, refined)
    on_ct = {
        f.component_label: f
        for f in measure_nodules(refined, volume, min_voxels=1, min_volume_mm3=0.0)
    }
    out = []
    for finding in nodules:
        match = on_ct.get(
            most_overlapping(model_components, finding.component_label, refined_components)
        )
        if match is None or match.axial_axes is None:
            out.append(finding)
            continue
        out.append(
            replace(
                finding,
                axial_axes=match.axial_axes,
                longest_diameter_mm=match.longest_diameter_mm,
            )
        )
    return out


def _components_in_common_box(
    labels: NDArray[np.uint8], refined: NDArray[np.uint8]
) -> tuple[NDArray[np.int32], NDArray[np.int32]]:
    """`label_components` of the nodule label in both maps, cut to the box that holds both
    (numbers unchanged): outside it both are 0, so overlaps are the same as on the whole
    volumes, without two 100 MB int32 volumes and a whole-volume pass per finding."""
    boxed = [boxed_components(m, LABEL_NODULE) for m in (labels, refined)]
    present = [b for b in boxed if b is not None]
    if not present:
        empty = np.zeros((0, 0, 0), dtype=np.int32)
        return empty, empty
    starts = [min(box[axis].start for box, _ in present) for axis in range(3)]
    stops = [max(box[axis].stop for box, _ in present) for axis in range(3)]
    out = []
    for found in boxed:
        components = np.zeros([b - a for a, b in zip(starts, stops, strict=True)], np.int32)
        if found is not None:
            box, local = found
            components[
                tuple(slice(b.start - a, b.stop - a) for b, a in zip(box, starts, strict=True))
            ] = local
        out.append(components)
    return out[0], out[1]


def _value(measurement: object) -> float:
    return float(getattr(measurement, "value", 0.0))
