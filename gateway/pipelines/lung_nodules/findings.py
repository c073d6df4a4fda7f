"""Typed findings of the lung nodule pipeline (its analyser's own record), and their
translation into the generic findings the results writers consume."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from gateway.pipelines.description import PipelineDescription
from gateway.pipelines.findings import (
    AxialAxes,
    ImageFinding,
    Measurement,
    ModelIdentity,
    PipelineFindings,
    SegmentFinding,
)
from gateway.pipelines.registry import load_pipeline_file

LABEL_BACKGROUND = 0
LABEL_LUNG = 1
LABEL_NODULE = 2
LABEL_NAMES = {LABEL_LUNG: "lung", LABEL_NODULE: "nodule"}


def lung_nodules_description() -> PipelineDescription:
    from gateway.pipelines.lung_nodules import DESCRIPTION_FILE

    return load_pipeline_file(DESCRIPTION_FILE)


@dataclass(frozen=True)
class NoduleFinding:
    """One connected component of the nodule label."""

    index: int
    """1-based, ordered by decreasing volume."""
    voxel_count: int
    volume_mm3: float
    longest_diameter_mm: float
    centroid_patient_mm: tuple[float, float, float]
    """Centroid in patient coordinates (LPS, mm)."""
    centroid_index: tuple[float, float, float]
    """Centroid as (slice, row, column) in the sorted volume."""
    slice_range: tuple[int, int]
    """First and last sorted slice index (inclusive) that contain the nodule."""
    component_label: int = 0
    """Its label in ``label_components(labels, LABEL_NODULE)``: how results find its voxels."""
    axial_axes: AxialAxes | None = None
    """Long and short axis on the axial slice where it is largest, with their end points."""

    @property
    def long_axis_mm(self) -> float:
        return 0.0 if self.axial_axes is None else self.axial_axes.long_axis_mm

    @property
    def short_axis_mm(self) -> float:
        return 0.0 if self.axial_axes is None else self.axial_axes.short_axis_mm

    @property
    def mean_diameter_mm(self) -> float:
        """Mean of long and short axis, to 0.1 mm (Lung-RADS v2022)."""
        return 0.0 if self.axial_axes is None else self.axial_axes.mean_diameter_mm

    def measured(self) -> dict[str, Measurement]:
        """Every measurement by its pipeline-file name."""
        mm = {
            "longest_diameter": self.longest_diameter_mm,
            "long_axis": self.long_axis_mm,
            "short_axis": self.short_axis_mm,
            "mean_diameter": self.mean_diameter_mm,
        }
        found = {"volume": Measurement("volume", self.volume_mm3, "mm3")}
        found.update({name: Measurement(name, value, "mm") for name, value in mm.items()})
        return found


@dataclass(frozen=True)
class Findings:
    """The lung nodule pipeline's findings; no patient identifiers."""

    labels: NDArray[np.uint8]
    """(slices, rows, columns), 0 background, 1 lung, 2 nodule, slices in the order of
    ``sop_instance_uids`` (sorted by position along the slice normal)."""
    sop_instance_uids: tuple[str, ...]
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    nodules: list[NoduleFinding]
    nodule_probability: float
    """Study-level probability that a nodule is present (classification CNN)."""
    segmentation_model: ModelIdentity
    classification_model: ModelIdentity
    runner: str
    lung_volume_mm3: float = 0.0
    timings_s: dict[str, float] = field(default_factory=dict)

    def label_present(self, label: int) -> bool:
        return bool(np.any(self.labels == label))

    def default_description(self) -> PipelineDescription:
        return lung_nodules_description()

    def pipeline_findings(self, description: PipelineDescription | None = None) -> PipelineFindings:
        """The same findings in the generic form, as the pipeline file declares them."""
        description = description or lung_nodules_description()
        lung, nodule = description.segment(LABEL_LUNG), description.segment(LABEL_NODULE)
        segments: list[SegmentFinding] = []
        lung_voxels = int(np.count_nonzero(self.labels == LABEL_LUNG))
        if lung_voxels:
            segments.append(
                SegmentFinding(
                    label=LABEL_LUNG,
                    name=lung.name,
                    index=0,
                    component_label=0,
                    voxel_count=lung_voxels,
                    measurements=(Measurement("volume", self.lung_volume_mm3, "mm3"),),
                )
            )
        for n in self.nodules:
            measured = n.measured()
            segments.append(
                SegmentFinding(
                    label=LABEL_NODULE,
                    name=nodule.name,
                    index=n.index,
                    component_label=n.component_label,
                    voxel_count=n.voxel_count,
                    measurements=tuple(measured[name] for name in nodule.measurements),
                    centroid_patient_mm=n.centroid_patient_mm,
                    centroid_index=n.centroid_index,
                    slice_range=n.slice_range,
                    axial_axes=n.axial_axes,
                )
            )
        image: tuple[ImageFinding, ...] = ()
        if description.classification is not None:
            c = description.classification
            image = (
                ImageFinding(
                    c.name, self.nodule_probability, self.nodule_probability >= c.threshold
                ),
            )
        return PipelineFindings(
            pipeline=description.name,
            labels=self.labels,
            sop_instance_uids=self.sop_instance_uids,
            study_instance_uid=self.study_instance_uid,
            series_instance_uid=self.series_instance_uid,
            frame_of_reference_uid=self.frame_of_reference_uid,
            segments=tuple(segments),
            image_findings=image,
            models=(self.segmentation_model, self.classification_model),
            runner=self.runner,
            timings_s=dict(self.timings_s),
        )
