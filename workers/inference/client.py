"""The inference client of the lung nodule pipeline: one series through both models (read,
preprocess, infer, postprocess). Model names, tensors, grids and window come from its
pipeline file; `infer_batched` is shared with the generic analyser."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from gateway.inference_config import InferenceSettings
from gateway.pipelines.description import PipelineDescription
from gateway.pipelines.lung_nodules.findings import lung_nodules_description
from workers.inference.declared import model_spec, neighbour_stack
from workers.inference.findings import LABEL_LUNG, LABEL_NODULE, Findings, ModelIdentity
from workers.inference.postprocess import caliper_axes, measure_nodules, refine_nodules
from workers.inference.preprocess import labels_from_probabilities
from workers.inference.runners import Deadline, ModelRunner, ModelSpec, OwnsRunner, make_runner
from workers.inference.series import Volume, read_series
from workers.prefetch.grids import model_grid

log = logging.getLogger(__name__)


def _spec(
    settings: InferenceSettings, key: str, description: PipelineDescription | None
) -> ModelSpec:
    """The model `key` of the pipeline file; the settings may still name another model or
    version (a site override, e.g. a model under test)."""
    spec = model_spec((description or lung_nodules_description()).model(key))
    name = getattr(settings, f"{key}_model")
    version = getattr(settings, f"{key}_model_version")
    return replace(
        spec,
        name=spec.name if name is None else name,
        version=spec.version if version is None else version,
    )


def segmentation_spec(
    settings: InferenceSettings, description: PipelineDescription | None = None
) -> ModelSpec:
    return _spec(settings, "segmentation", description)


def classification_spec(
    settings: InferenceSettings, description: PipelineDescription | None = None
) -> ModelSpec:
    return _spec(settings, "classification", description)


class InferenceClient(OwnsRunner):
    """Analyse series with the lung nodule pipeline, on the runner chosen by the settings
    (Triton or onnxruntime)."""

    def __init__(
        self,
        settings: InferenceSettings,
        runner: ModelRunner | None = None,
        description: PipelineDescription | None = None,
    ) -> None:
        self.settings = settings
        self.runner = runner or make_runner(settings)
        self.description = description or lung_nodules_description()

    def _batched(
        self,
        spec: ModelSpec,
        x: NDArray[np.float32],
        deadline: Deadline,
        neighbours: int = 0,
    ) -> NDArray[np.float32]:
        """Run ``spec`` on the slices ``x`` in requests of ``batch_size``; with ``neighbours``
        each request stacks every slice with its neighbours (2.5D input), batch by batch
        so that the many-channel copy of the volume is never held whole."""
        return infer_batched(self.runner, spec, x, deadline, self.settings.batch_size, neighbours)

    def analyse_files(self, paths: Iterable[Path | str]) -> Findings:
        t0 = time.perf_counter()
        volume = read_series(paths)
        read_s = time.perf_counter() - t0
        findings = self.analyse_volume(volume)
        findings.timings_s["read"] = read_s
        findings.timings_s["total"] = time.perf_counter() - t0
        return findings

    def analyse_volume(self, volume: Volume) -> Findings:
        timings: dict[str, float] = {}
        deadline = Deadline(self.settings.deadline_s)
        seg_spec = segmentation_spec(self.settings, self.description)
        cls_spec = classification_spec(self.settings, self.description)
        seg_pre = self.description.model("segmentation").preprocess
        cls_pre = self.description.model("classification").preprocess
        t = time.perf_counter()
        seg_id = self.runner.check_model(seg_spec, deadline)
        cls_id = self.runner.check_model(cls_spec, deadline)
        timings["check_models"] = time.perf_counter() - t

        t = time.perf_counter()
        x = model_grid(volume, seg_pre)
        x_cnn = model_grid(volume, cls_pre)
        timings["preprocess"] = time.perf_counter() - t

        t = time.perf_counter()
        probs = self._batched(seg_spec, x, deadline)
        timings["segmentation"] = time.perf_counter() - t
        t = time.perf_counter()
        slice_probs = self._batched(
            cls_spec, x_cnn, deadline, cls_pre.neighbours if cls_pre.context == "2.5d" else 0
        )
        timings["classification"] = time.perf_counter() - t

        t = time.perf_counter()
        assert seg_pre.spacing_mm is not None  # the U-Net's grid is fixed in mm
        labels = labels_from_probabilities(
            probs,
            volume.pixel_spacing,
            volume.shape[1:],
            size=seg_pre.size,
            spacing_mm=seg_pre.spacing_mm,
        )
        nodule = self.description.segment(LABEL_NODULE)
        nodules = measure_nodules(
            labels, volume, nodule.min_voxels, nodule.min_volume_mm3, seg_pre.spacing_mm
        )
        if nodule.refine is not None:
            # Calipers on the CT: diameters and centre from the outline refined on the CT
            # values near each finding; which findings there are, their volume and the SEG
            # stay the model's (refining them grew a model's false-positive speck on a
            # vessel from 54 to 122 mm3 in the end-to-end test: a 6 mm "nodule").
            refined = refine_nodules(labels, volume, nodule.refine)
            nodules = caliper_axes(nodules, labels, refined, volume)
        lung_volume = float(np.count_nonzero(labels == LABEL_LUNG)) * volume.voxel_volume_mm3
        timings["postprocess"] = time.perf_counter() - t
        probability = float(slice_probs.max()) if len(slice_probs) else 0.0
        log.info(
            "series analysed: %d slices, %d nodule(s), p=%.3f, runner=%s",
            volume.shape[0],
            len(nodules),
            probability,
            self.runner.name,
        )
        return Findings(
            labels=labels,
            sop_instance_uids=volume.sop_instance_uids,
            study_instance_uid=volume.study_instance_uid,
            series_instance_uid=volume.series_instance_uid,
            frame_of_reference_uid=volume.frame_of_reference_uid,
            nodules=nodules,
            nodule_probability=probability,
            segmentation_model=ModelIdentity(seg_id.name, seg_id.version),
            classification_model=ModelIdentity(cls_id.name, cls_id.version),
            runner=self.runner.name,
            lung_volume_mm3=lung_volume,
            timings_s=timings,
        )


LungNoduleAnalyser = InferenceClient
"""The analyser the `lung_nodules` entry point names."""


def infer_batched(
    runner: ModelRunner,
    spec: ModelSpec,
    x: NDArray[np.float32],
    deadline: Deadline,
    batch_size: int,
    neighbours: int = 0,
) -> NDArray[np.float32]:
    """Run ``spec`` on the slices ``x`` (S, 1, H, W) in requests of ``batch_size``; with
    ``neighbours`` each request stacks every slice with that many neighbours either side."""
    parts = [
        runner.infer(
            spec,
            neighbour_stack(x, neighbours, i, i + batch_size)
            if neighbours
            else x[i : i + batch_size],
            deadline,
        )
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, *spec.output_shape), np.float32)


def analyse_series(paths: Iterable[Path | str], settings: InferenceSettings) -> Findings:
    """Convenience: one series with a fresh client."""
    with InferenceClient(settings) as client:
        return client.analyse_files(paths)
