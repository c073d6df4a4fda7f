"""The generic analyser: runs any pipeline described by its file alone. Read the series,
preprocess as declared, call each declared model, and turn the outputs into findings: a label
map (argmax or threshold) split into segments and components with their measurements, and an
image-level finding from a probability."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from gateway.inference_config import InferenceSettings
from gateway.pipelines.description import (
    Classification,
    PipelineDescription,
    SegmentDescription,
)
from gateway.pipelines.findings import (
    ImageFinding,
    ModelIdentity,
    PipelineFindings,
    SegmentFinding,
)
from gateway.pipelines.measure import label_components, measure_segment
from gateway.pipelines.refine import caliper_findings, refine_by_threshold
from workers.inference.client import infer_batched
from workers.inference.declared import (
    from_slabs,
    grid_spacing,
    model_spec,
    reverses_slices,
    to_slabs,
)
from workers.inference.errors import PermanentInferenceError
from workers.inference.preprocess import labels_from_probabilities
from workers.inference.runners import Deadline, ModelRunner, OwnsRunner, make_runner
from workers.inference.series import Volume, read_series
from workers.prefetch.grids import model_grid

log = logging.getLogger(__name__)


def calibrated(probability: float, classification: Classification) -> float:
    if classification.calibration is None:
        return probability
    a, b = classification.calibration
    p = min(max(probability, 1e-7), 1 - 1e-7)
    return 1.0 / (1.0 + math.exp(-(a * math.log(p / (1 - p)) + b)))


class DescribedAnalyser(OwnsRunner):
    """Analyse series as a pipeline file declares, on the runner chosen by the settings."""

    def __init__(
        self,
        settings: InferenceSettings,
        description: PipelineDescription,
        runner: ModelRunner | None = None,
    ) -> None:
        self.settings = settings
        self.description = description
        self.runner = runner or make_runner(settings)

    def analyse_files(self, paths: Iterable[Path | str]) -> PipelineFindings:
        t0 = time.perf_counter()
        volume = read_series(paths)
        read_s = time.perf_counter() - t0
        findings = self.analyse_volume(volume)
        findings.timings_s["read"] = read_s
        findings.timings_s["total"] = time.perf_counter() - t0
        return findings

    def _run(self, key: str, volume: Volume, deadline: Deadline) -> NDArray[np.float32]:
        model = self.description.model(key)
        p = model.preprocess
        if p.method != "window":
            raise PermanentInferenceError(
                f"model {model.name!r}: the generic analyser expects preprocess method "
                f"'window', found {p.method!r} (a registered analyser's)"
            )
        x = model_grid(volume, p)
        # the model sees the slices in its declared order; the outputs go back to the reader's
        reverse = reverses_slices(p, volume.normal)
        if reverse:
            x = np.ascontiguousarray(x[::-1])
        spec = model_spec(model)
        if p.slab is not None:
            # batch_size counts slices: as many whole slabs per request, at least one
            per_request = max(1, self.settings.batch_size // p.slab)
            slabs = infer_batched(self.runner, spec, to_slabs(x, p.slab), deadline, per_request)
            out = from_slabs(slabs, len(x))
        else:
            neighbours = p.neighbours if p.context == "2.5d" else 0
            out = infer_batched(
                self.runner, spec, x, deadline, self.settings.batch_size, neighbours
            )
        return np.ascontiguousarray(out[::-1]) if reverse else out

    def _labels(self, volume: Volume, deadline: Deadline) -> NDArray[np.uint8]:
        segmentation = self.description.segmentation
        if segmentation is None:
            return np.zeros(volume.shape, dtype=np.uint8)
        out = self._run(segmentation.model, volume, deadline)
        p = self.description.model(segmentation.model).preprocess
        spacing = grid_spacing(p, volume.pixel_spacing, volume.shape[1:])
        if segmentation.method == "threshold":
            # label 1 where the (interpolated) output exceeds the threshold: the argmax of
            # [threshold, output]
            out = np.concatenate([np.full_like(out, segmentation.threshold), out], axis=1)
        labels = labels_from_probabilities(
            out, volume.pixel_spacing, volume.shape[1:], size=p.size, spacing_mm=spacing
        )
        if segmentation.method == "threshold":
            labels[labels == 1] = segmentation.threshold_label
        return labels

    @staticmethod
    def _measure(
        segment: SegmentDescription,
        labels: NDArray[np.uint8],
        volume: Volume,
        resolution: float | None,
        *,
        at_pixels: bool = False,
    ) -> list[SegmentFinding]:
        """`segment` measured on `labels`; `at_pixels`: a refined outline, drawn at the
        source pixels, where every component counts (the model's decide what is found)."""
        return measure_segment(
            labels,
            segment.label,
            segment.name,
            segment.measurements,
            volume.voxel_volume_mm3,
            volume.pixel_spacing,
            volume.index_to_patient,
            components=segment.components,
            min_voxels=1 if at_pixels else segment.min_voxels,
            min_volume_mm3=0.0 if at_pixels else segment.min_volume_mm3,
            resolution_mm=None if at_pixels else resolution,
            sop_instance_uids=volume.sop_instance_uids,
        )

    def _segments(self, labels: NDArray[np.uint8], volume: Volume) -> list[SegmentFinding]:
        found: list[SegmentFinding] = []
        segmentation = self.description.segmentation
        resolution = None
        if segmentation is not None:
            # the label map is no finer than the grid the model labelled
            p = self.description.model(segmentation.model).preprocess
            grid = grid_spacing(p, volume.pixel_spacing, volume.shape[1:])
            resolution = max(grid, *volume.pixel_spacing)
        for segment in self.description.segments:
            of_model = self._measure(segment, labels, volume, resolution)
            if segment.refine is not None:
                # Calipers on the CT: which findings, their volume and the SEG stay the
                # model's; diameters and centre come from the outline refined on the CT.
                refined = refine_by_threshold(
                    labels,
                    volume.hu,
                    segment.label,
                    (volume.slice_spacing, *volume.pixel_spacing),
                    segment.refine.threshold_hu,
                    segment.refine.margin_mm,
                    segment.refine.opening_mm,
                    outside_label=0,
                )
                of_model = caliper_findings(
                    of_model,
                    label_components(labels, segment.label),
                    self._measure(segment, refined, volume, None, at_pixels=True),
                    label_components(refined, segment.label),
                )
            found += of_model
        return found

    def analyse_volume(self, volume: Volume) -> PipelineFindings:
        timings: dict[str, float] = {}
        deadline = Deadline(self.settings.deadline_s)
        t = time.perf_counter()
        models = tuple(
            ModelIdentity(*self._identity(key, deadline))
            for key in (m.key for m in self.description.models)
        )
        timings["check_models"] = time.perf_counter() - t
        t = time.perf_counter()
        labels = self._labels(volume, deadline)
        image: list[ImageFinding] = []
        classification = self.description.classification
        if classification is not None:
            slices = self._run(classification.model, volume, deadline)
            raw = slices.max() if classification.reduce == "max" else slices.mean()
            probability = calibrated(float(raw) if len(slices) else 0.0, classification)
            image.append(
                ImageFinding(
                    classification.name, probability, probability >= classification.threshold
                )
            )
        timings["inference"] = time.perf_counter() - t
        t = time.perf_counter()
        segments = self._segments(labels, volume)
        timings["postprocess"] = time.perf_counter() - t
        log.info(
            "series analysed by %s: %d slices, %d segment finding(s), runner=%s",
            self.description.name,
            volume.shape[0],
            len(segments),
            self.runner.name,
        )
        return PipelineFindings(
            pipeline=self.description.name,
            labels=labels,
            sop_instance_uids=volume.sop_instance_uids,
            study_instance_uid=volume.study_instance_uid,
            series_instance_uid=volume.series_instance_uid,
            frame_of_reference_uid=volume.frame_of_reference_uid,
            segments=tuple(segments),
            image_findings=tuple(image),
            models=models,
            runner=self.runner.name,
            timings_s=timings,
        )

    def _identity(self, key: str, deadline: Deadline) -> tuple[str, str]:
        found = self.runner.check_model(model_spec(self.description.model(key)), deadline)
        return found.name, found.version
