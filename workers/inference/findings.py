"""Typed results of the inference of one series."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

LABEL_BACKGROUND = 0
LABEL_LUNG = 1
LABEL_NODULE = 2
LABEL_NAMES = {LABEL_LUNG: "lung", LABEL_NODULE: "nodule"}


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: str


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
    """Its label in ``nodule_components(labels)``: how the results find its voxels."""


@dataclass(frozen=True)
class Findings:
    """Everything the results builders need; no patient identifiers."""

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
