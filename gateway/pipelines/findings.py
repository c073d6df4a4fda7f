"""Typed findings of one series, for any pipeline: what the worker produces and the results
writers consume. No patient identifiers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class ModelIdentity:
    """A model as the runner found it: name and the version it serves."""

    name: str
    version: str

    @property
    def identity(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Measurement:
    """A measured value by its name in the pipeline file ('volume', 'longest_diameter')."""

    name: str
    value: float
    unit: str
    """UCUM unit, e.g. 'mm3', 'mm'."""


@dataclass(frozen=True)
class SegmentFinding:
    """A segment of the label map: the whole label, or one connected component of it."""

    label: int
    """Label value in the label map (as in the pipeline file)."""
    name: str
    """The segment's name in the pipeline file, e.g. 'nodule'."""
    index: int
    """1-based component index by decreasing volume; 0 for a whole-label segment."""
    component_label: int
    """The component's label in ``label_components(labels, label)``; 0 for a whole label."""
    voxel_count: int
    measurements: tuple[Measurement, ...] = ()
    centroid_patient_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    centroid_index: tuple[float, float, float] = (0.0, 0.0, 0.0)
    slice_range: tuple[int, int] = (0, 0)

    @property
    def key(self) -> str:
        """Stable name of the structure ('lung', 'nodule-1'): tracking UIDs derive from it."""
        return self.name if self.index == 0 else f"{self.name}-{self.index}"

    def measurement(self, name: str) -> Measurement | None:
        return next((m for m in self.measurements if m.name == name), None)


@dataclass(frozen=True)
class ImageFinding:
    """An image-level finding from a classification model."""

    name: str
    probability: float
    present: bool


@dataclass(frozen=True)
class PipelineFindings:
    """Everything the results writers need of one analysed series."""

    pipeline: str
    labels: NDArray[np.uint8]
    """(slices, rows, columns) label map, slices in the order of ``sop_instance_uids``."""
    sop_instance_uids: tuple[str, ...]
    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str
    segments: tuple[SegmentFinding, ...]
    image_findings: tuple[ImageFinding, ...]
    models: tuple[ModelIdentity, ...]
    """In the order of the pipeline file's models."""
    runner: str
    timings_s: dict[str, float] = field(default_factory=dict)
