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
    """A measured value by its name in the pipeline file ('volume', 'long_axis', ...)."""

    name: str
    value: float
    unit: str
    """UCUM unit, e.g. 'mm3', 'mm'."""


@dataclass(frozen=True)
class AxialAxes:
    """Long and short axis of a finding on the axial slice where it is largest (Lung-RADS):
    lengths (mm), end points in patient coordinates (LPS, mm) and the slice they lie on."""

    slice_index: int
    """Index of the slice in the sorted volume."""
    sop_instance_uid: str
    """SOP Instance UID of that slice ('' when the measurer was not given the UIDs)."""
    long_axis_mm: float
    short_axis_mm: float
    long_axis_points: tuple[tuple[float, float, float], ...]
    """The long axis's two end points (LPS, mm)."""
    short_axis_points: tuple[tuple[float, float, float], ...]
    """The short axis's two end points (LPS, mm), perpendicular to the long axis."""

    @property
    def mean_diameter_mm(self) -> float:
        """Mean of long and short axis, rounded to 0.1 mm as Lung-RADS v2022 says."""
        return round((self.long_axis_mm + self.short_axis_mm) / 2.0, 1)

    def value(self, name: str) -> float:
        """'long_axis', 'short_axis' or 'mean_diameter' (mm)."""
        values = {
            "long_axis": self.long_axis_mm,
            "short_axis": self.short_axis_mm,
            "mean_diameter": self.mean_diameter_mm,
        }
        if name not in values:
            raise KeyError(f"expected one of {sorted(values)}, found {name!r}")
        return values[name]


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
    axial_axes: AxialAxes | None = None
    """Long and short axis, when a measurement asked for them."""

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
class PointFinding:
    """A localised finding on a projection image: a point in the source image's pixels (the
    model gives no size; `radius_px` is the nominal radius the SR draws)."""

    name: str
    """The localisation's name in the pipeline file, e.g. 'nodule'."""
    index: int
    """1-based, by decreasing probability."""
    sop_instance_uid: str
    """The image the point lies on."""
    row: float
    """Pixel row, 0 = centre of the first row."""
    column: float
    """Pixel column, 0 = centre of the first column."""
    radius_px: float
    probability: float

    @property
    def key(self) -> str:
        """Stable name ('nodule-1'): its tracking UID derives from it."""
        return f"{self.name}-{self.index}"


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
    point_findings: tuple[PointFinding, ...] = ()
    """Localised findings on a projection image (pipelines with a localisation)."""
