"""A pipeline file (TOML) as validated pydantic models: every field says what it is for.

A file-only pipeline needs nothing else: the generic analyser in the workers reads the series,
preprocesses as declared, calls each declared model and turns its outputs into findings; the
results writers turn findings into SEG segments and TID 1500 groups as declared.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.routing.config import SeriesSelectionSettings


class _Strict(BaseModel):
    # A misspelt key is an error, not a silently ignored default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeDescription(_Strict):
    """A coded concept (e.g. SNOMED CT): value, coding scheme, meaning."""

    value: str = Field(min_length=1, max_length=64, description="Code value, e.g. '39607008'.")
    scheme: str = Field(
        min_length=1, max_length=16, description="Coding scheme designator: 'SCT', 'DCM', 'LN'."
    )
    meaning: str = Field(min_length=1, max_length=64, description="Code meaning, e.g. 'Lung'.")


class Accepts(_Strict):
    """Which series the pipeline accepts, and how it picks one among a rule's selection:
    the thinnest qualifying series (unknown thickness last), then more slices, then the lower
    series number; images: the first of `view_positions` first."""

    modalities: list[str] = Field(
        min_length=1, description="Modality values accepted (upper case), e.g. ['CT']."
    )
    geometry: Literal["volume", "image"] = Field(
        default="volume",
        description="'volume': a stack of parallel cross-sectional slices (CT, MR); "
        "'image': one projection image (DX, CR).",
    )
    min_slices: int = Field(default=1, ge=1, description="Fewest instances in the series.")
    max_slices: int = Field(default=2000, ge=1, description="Most instances in the series.")
    max_tilt_deg: float = Field(
        default=30.0,
        ge=0,
        le=90,
        description="Volumes only: the slice normal within this angle of the body axis.",
    )
    view_positions: list[str] = Field(
        default_factory=list,
        description="Images only: ViewPosition values accepted, in order of preference "
        "(e.g. ['PA', 'AP']); a series with another value (LL, LATERAL) is passed over, one "
        "without ViewPosition comes after the listed ones. Empty: any view.",
    )

    @model_validator(mode="after")
    def _slice_range(self) -> Self:
        if self.min_slices > self.max_slices:
            raise ValueError(
                f"expected min_slices <= max_slices, found {self.min_slices} > {self.max_slices}"
            )
        if self.geometry == "image" and self.max_slices != 1:
            raise ValueError(f"geometry 'image' expects max_slices = 1, found {self.max_slices}")
        if self.geometry == "volume" and self.view_positions:
            raise ValueError(
                f"view_positions: expected none for geometry 'volume', found {self.view_positions}"
            )
        return self

    def series_selection(self) -> SeriesSelectionSettings:
        """The router's selection criteria for this pipeline."""
        return SeriesSelectionSettings(
            modalities=[m.upper() for m in self.modalities],
            min_slices=self.min_slices,
            max_slices=self.max_slices,
            axial_tolerance_deg=self.max_tilt_deg,
            geometry=self.geometry,
            view_positions=[v.upper() for v in self.view_positions],
        )


SliceOrder = Literal[
    "along_normal", "against_normal", "inferior_to_superior", "superior_to_inferior"
]
"""How slices are presented to a model (Preprocess.slice_order)."""


class Preprocess(_Strict):
    """How slices become a model's input: resampled in plane to a square grid centred on the
    image centre, windowed, then scaled as (value - center) / scale."""

    method: Literal["window", "radiograph"] = Field(
        default="window",
        description="'window': rescaled values (HU) windowed and scaled as above (the generic "
        "analyser); 'radiograph': a projection image through the Modality LUT, negated for "
        "MONOCHROME1, area-averaged and resampled to `size` pixels of `spacing_mm` at the "
        "detector, its `percentiles` scaled to 0 and 1, then clipped to `window` (a "
        "registered analyser: workers/inference/chest_xray.py).",
    )
    percentiles: tuple[float, float] = Field(
        default=(1.0, 99.0),
        description="'radiograph': the percentiles of the pixels inside the image that "
        "become 0 and 1.",
    )
    size: int = Field(ge=1, le=4096, description="Grid size in pixels (rows = columns).")
    spacing_mm: float | None = Field(
        default=None,
        gt=0,
        description="Pixel spacing of the grid (mm). None: the image is fitted to the grid "
        "(its field of view scaled to `size` pixels).",
    )
    window: tuple[float, float] = Field(
        description="Intensity window [low, high] in the image's rescaled values (HU for CT); "
        "values are clipped to it."
    )
    center: float = Field(default=0.0, description="Subtracted after windowing.")
    scale: float = Field(default=1.0, gt=0, description="Divided by after centring.")
    fill: float | None = Field(
        default=None, description="Value outside the image (default: the window's low end)."
    )
    context: Literal["2d", "2.5d", "3d"] = Field(
        default="2d",
        description="'2d': one channel per slice; '2.5d': each slice with `neighbours` slices "
        "either side as channels (mirrored at the ends); '3d': slabs of `slab` consecutive "
        "slices, input (1, slab, size, size), output (classes, slab, size, size), the last "
        "slab padded by repeating the last slice (its padding dropped from the output).",
    )
    neighbours: int = Field(default=1, ge=1, le=8, description="2.5d: slices either side.")
    slab: int | None = Field(
        default=None,
        ge=1,
        le=512,
        description="3d (required there, and only there): slices per model call.",
    )
    slice_order: SliceOrder = Field(
        default="along_normal",
        description="Order of the slices given to the model (2.5d neighbours and 3d slabs "
        "depend on it): 'along_normal' (as the reader sorts them: ascending along the normal "
        "row x column of ImageOrientationPatient, inferior to superior for the usual axial "
        "orientation [1,0,0,0,1,0]), 'against_normal' (reversed), 'inferior_to_superior' or "
        "'superior_to_inferior' (by the patient's head-foot axis, whatever the orientation).",
    )

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.window[0] >= self.window[1]:
            raise ValueError(f"expected window low < high, found {list(self.window)}")
        if self.context == "3d" and self.slab is None:
            raise ValueError("context '3d': expected slab (slices per model call), found none")
        if self.context != "3d" and self.slab is not None:
            raise ValueError(
                f"slab: expected none for context {self.context!r} (3d only), found {self.slab}"
            )
        return self

    @property
    def channels(self) -> int:
        return 2 * self.neighbours + 1 if self.context == "2.5d" else 1

    def input_shape(self) -> list[int]:
        """The model's input per item (without the batch dimension) this preprocessing makes."""
        if self.slab is not None:
            return [1, self.slab, self.size, self.size]
        return [self.channels, self.size, self.size]

    def map_shape(self, classes: int) -> list[int]:
        """A per-pixel output of `classes` channels per item for this preprocessing."""
        if self.slab is not None:
            return [classes, self.slab, self.size, self.size]
        return [classes, self.size, self.size]


class ModelDescription(_Strict):
    """One Triton model the pipeline calls: its tensors as Triton's config.pbtxt declares."""

    key: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="The model's role in this file ('segmentation', 'classification'), "
        "referenced by `segmentation.model` and `classification.model`.",
    )
    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Model folder name in the repository."
    )
    version: str = Field(default="1", pattern=r"^[0-9]*$", description="'' means latest.")
    input: str = Field(min_length=1, description="Input tensor name.")
    output: str = Field(min_length=1, description="Output tensor name.")
    dtype: Literal["FP32", "FP16"] = Field(
        default="FP32",
        description="Data type of the input and output tensors: 'FP32' or 'FP16' (the input "
        "is cast to it, the output read as it and converted to FP32 for postprocessing).",
    )
    input_shape: list[int] = Field(
        min_length=1, description="Input shape per item, without the batch dimension."
    )
    output_shape: list[int] = Field(
        min_length=1, description="Output shape per item, without the batch dimension."
    )
    preprocess: Preprocess = Field(description="How slices become this model's input.")

    @model_validator(mode="after")
    def _input_matches_preprocess(self) -> Self:
        p = self.preprocess
        want = p.input_shape()
        if self.input_shape != want:
            layout = "1, slab, size, size" if p.slab is not None else "channels, size, size"
            raise ValueError(
                f"model {self.name!r}: expected input_shape {want} ({layout} from preprocess "
                f"context {p.context!r}), found {self.input_shape}"
            )
        if p.slab is not None and (
            len(self.output_shape) != 4 or self.output_shape[1:] != [p.slab, p.size, p.size]
        ):
            raise ValueError(
                f"model {self.name!r}: context '3d' expects output_shape [classes, {p.slab}, "
                f"{p.size}, {p.size}] (classes, slab, size, size), found {self.output_shape}"
            )
        return self

    @property
    def identity(self) -> str:
        return f"{self.name}:{self.version or 'latest'}"


Measurement = Literal["volume", "longest_diameter", "long_axis", "short_axis", "mean_diameter"]
"""What gateway/pipelines/measure.py measures (its docstring defines each)."""


class Refine(_Strict):
    """How a segment's components are refined on the source grid from the CT values
    (gateway/pipelines/refine.py): within each component dilated by `margin_mm`, the voxels
    at or above `threshold_hu`, opened in plane by `opening_mm`, touching the component."""

    method: Literal["threshold"] = Field(
        description="'threshold': HU at or above `threshold_hu` (solid objects in air, e.g. "
        "solid nodules in aerated lung)."
    )
    threshold_hu: float = Field(
        ge=-1000,
        le=3000,
        description="Half-way between the object and its surroundings: -400 for a solid "
        "nodule (about 0-60 HU) in aerated lung (about -850 HU).",
    )
    margin_mm: float = Field(
        gt=0,
        le=20,
        description="How far beyond the model's outline the object may reach (mm; at least "
        "one voxel along each axis).",
    )
    opening_mm: float = Field(
        default=1.0,
        ge=0,
        le=5,
        description="Radius of the in-plane opening that cuts thin attachments (vessels) off "
        "(mm); 0: none.",
    )


class SegmentDescription(_Strict):
    """One label value of the label map as a SEG segment (and, optionally, SR groups)."""

    label: int = Field(ge=1, le=255, description="Label value in the label map.")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="Identifier, e.g. 'nodule'.")
    title: str = Field(
        min_length=1, max_length=56, description="Segment label shown in viewers, e.g. 'Nodule'."
    )
    category: CodeDescription = Field(
        description="Segmented Property Category (SCT), e.g. 91723000 Anatomical Structure."
    )
    type: CodeDescription = Field(description="Segmented Property Type (SCT), e.g. Lung.")
    anatomic_region: CodeDescription | None = Field(
        default=None, description="Where it is (SCT), e.g. Lung for a nodule."
    )
    colour: tuple[int, int, int] = Field(
        description="Display colour [R, G, B], 0-255; written as RecommendedDisplayCIELabValue."
    )
    components: bool = Field(
        default=False,
        description="Each connected component (26-connected) is its own finding and segment, "
        "numbered by decreasing volume; else the whole label is one segment.",
    )
    min_volume_mm3: float = Field(
        default=0.0, ge=0, description="Components: smaller ones are dropped."
    )
    min_voxels: int = Field(default=1, ge=1, description="Components: fewer voxels dropped.")
    measurements: list[Measurement] = Field(
        default_factory=list,
        description="Measured per finding: 'volume' (mm3), 'longest_diameter' (3D, mm), "
        "'long_axis', 'short_axis' and 'mean_diameter' (on the axial slice where the finding "
        "is largest, mm; Lung-RADS).",
    )
    report: bool = Field(
        default=False,
        description="Write a TID 1500 volumetric group per finding into the SR, referencing "
        "its SEG segment, with its measurements.",
    )
    refine: Refine | None = Field(
        default=None,
        description="Refine each component's outline on the source grid from the CT values "
        "(SEG and measurements); components only.",
    )

    @model_validator(mode="after")
    def _colour(self) -> Self:
        if any(not 0 <= c <= 255 for c in self.colour):
            raise ValueError(f"expected colour values 0-255, found {list(self.colour)}")
        if self.refine is not None and not self.components:
            raise ValueError(
                f"segment {self.name!r}: expected components = true for refine, found false"
            )
        return self


class Segmentation(_Strict):
    """How a model's output becomes a label map on the source grid."""

    model: str = Field(description="Key of the model whose output is the label map.")
    method: Literal["argmax", "threshold"] = Field(
        description="'argmax': output (classes, size, size), the label is the best class "
        "(class k = label k); 'threshold': output (1, size, size), label `threshold_label` "
        "where the output is at or above `threshold`; context '3d': (classes, slab, size, "
        "size)."
    )
    threshold: float = Field(default=0.5, description="'threshold': the cut-off.")
    threshold_label: int = Field(default=1, ge=1, le=255, description="'threshold': label.")


class Classification(_Strict):
    """An image-level finding from a model's per-slice probability."""

    model: str = Field(description="Key of the model that gives the probability.")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="Identifier.")
    title: str = Field(
        min_length=1, max_length=64, description="SR tracking identifier of the finding."
    )
    finding: CodeDescription = Field(description="Finding type code (SCT), e.g. Nodule.")
    finding_site: CodeDescription | None = Field(
        default=None, description="Finding site (SCT), e.g. Lung."
    )
    threshold: float = Field(
        default=0.5, ge=0, le=1, description="Probability at or above: 'Present', else 'Absent'."
    )
    calibration: tuple[float, float] | None = Field(
        default=None,
        description="Optional logistic calibration [a, b]: p' = 1 / (1 + exp(-(a * logit(p) "
        "+ b))), applied before the threshold.",
    )
    reduce: Literal["max", "mean"] = Field(
        default="max", description="How per-slice probabilities become the study's."
    )


class Localisation(_Strict):
    """Localised findings on a projection image from a model's probability map: each local
    maximum at or above the threshold is one finding, a point in the source image's pixels
    (the model gives no size: the SR draws a circle of `radius_mm` around it)."""

    model: str = Field(description="Key of the model whose output is the probability map.")
    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,31}$",
        description="Identifier; the findings are '<name>-1', '<name>-2', ... by decreasing "
        "probability.",
    )
    title: str = Field(
        min_length=1, max_length=56, description="SR tracking identifier, e.g. 'Nodule'."
    )
    finding: CodeDescription = Field(description="Finding type code (SCT), e.g. Nodule.")
    finding_site: CodeDescription | None = Field(
        default=None, description="Finding site (SCT), e.g. Lung."
    )
    threshold: float = Field(default=0.5, ge=0, le=1, description="Peaks at or above.")
    radius_mm: float = Field(
        default=10.0, gt=0, le=200, description="Radius of the circle drawn in the SR (mm)."
    )
    max_findings: int = Field(default=10, ge=1, le=100, description="Most findings per image.")


class Report(_Strict):
    """How the SEG and SR present themselves."""

    procedure: CodeDescription = Field(
        description="SR Procedure reported, from CID 100 (TID 1500 takes it from there; "
        "PixelMed checks it), e.g. LN 25045-6 CT unspecified body region."
    )
    seg_series_description: str = Field(max_length=64, description="SEG Series Description.")
    seg_content_label: str = Field(
        pattern=r"^[A-Z0-9_ ]{1,16}$", description="SEG Content Label (CS: upper case)."
    )
    seg_content_description: str = Field(max_length=64, description="SEG Content Description.")
    sr_series_description: str = Field(max_length=64, description="SR Series Description.")
    contribution_description: str = Field(
        max_length=64, description="Contributing Equipment: what the gateway contributed."
    )


class PipelineDescription(_Strict):
    """A pipeline file."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="Identifier that rules name, e.g. 'lung_nodules'.",
    )
    version: str = Field(min_length=1, max_length=32, description="Version of this pipeline.")
    title: str = Field(min_length=1, max_length=128, description="Human-readable title.")
    accepts: Accepts = Field(description="Which series it accepts and how it picks one.")
    models: list[ModelDescription] = Field(min_length=1, description="The models it calls.")
    segmentation: Segmentation | None = Field(
        default=None, description="Label map from a model (SEG segments)."
    )
    segments: list[SegmentDescription] = Field(
        default_factory=list, description="Label values as SEG segments."
    )
    classification: Classification | None = Field(
        default=None, description="Image-level finding from a model (SR)."
    )
    localisation: Localisation | None = Field(
        default=None,
        description="Localised findings on a projection image from a model's probability map "
        "(SR planar regions); geometry 'image' only.",
    )
    report: Report = Field(description="How the SEG and SR present themselves.")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        keys = [m.key for m in self.models]
        if len(set(keys)) != len(keys):
            raise ValueError(f"expected unique model keys, found {keys}")
        for what, part in (
            ("segmentation", self.segmentation),
            ("classification", self.classification),
            ("localisation", self.localisation),
        ):
            if part is not None and part.model not in keys:
                raise ValueError(f"{what}.model: expected one of {keys}, found {part.model!r}")
        if self.segmentation is None and self.segments:
            raise ValueError("segments: expected a [segmentation] section to make them")
        if self.segmentation is not None and not self.segments:
            raise ValueError("segments: expected at least one segment for [segmentation]")
        labels = [s.label for s in self.segments]
        names = [s.name for s in self.segments]
        if len(set(labels)) != len(labels) or len(set(names)) != len(names):
            raise ValueError(f"segments: expected unique labels and names, found {labels} {names}")
        if self.segmentation is None and self.classification is None:
            raise ValueError("expected [segmentation] or [classification], found neither")
        if self.segmentation is not None:
            model = self.model(self.segmentation.model)
            classes = max(labels) + 1 if self.segmentation.method == "argmax" else 1
            want = model.preprocess.map_shape(classes)
            if model.output_shape != want:
                raise ValueError(
                    f"model {model.name!r}: expected output_shape {want} for "
                    f"{self.segmentation.method} over labels {labels}, found {model.output_shape}"
                )
        if self.classification is not None:
            model = self.model(self.classification.model)
            # a probability, or a map whose maximum is the image's probability
            if model.output_shape != [1] and self.classification.reduce != "max":
                raise ValueError(
                    f"model {model.name!r}: expected output_shape [1] (a probability) or "
                    f"reduce 'max' over a map, found {model.output_shape} with reduce "
                    f"{self.classification.reduce!r}"
                )
        if self.localisation is not None and self.accepts.geometry != "image":
            raise ValueError(
                f"localisation: expected accepts.geometry 'image', found {self.accepts.geometry!r}"
            )
        return self

    def model(self, key: str) -> ModelDescription:
        for m in self.models:
            if m.key == key:
                return m
        raise KeyError(f"expected a model with key {key!r}, found {[m.key for m in self.models]}")

    def segment(self, label: int) -> SegmentDescription:
        for s in self.segments:
            if s.label == label:
                return s
        raise KeyError(f"expected a segment with label {label}, found none")

    @property
    def model_key(self) -> str:
        """What a job records of its models: 'name:version+name:version'."""
        return "+".join(m.identity for m in self.models)
