"""One series through both models: read, preprocess, infer, postprocess."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from workers.inference.config import InferenceSettings
from workers.inference.findings import LABEL_LUNG, Findings, ModelIdentity
from workers.inference.postprocess import measure_nodules
from workers.inference.preprocess import (
    CNN_CHANNELS,
    CNN_SIZE,
    MODEL_SIZE,
    labels_from_probabilities,
    to_cnn_slices,
    to_model_input,
    with_neighbours,
)
from workers.inference.runners import Deadline, ModelRunner, ModelSpec, make_runner
from workers.inference.series import Volume, read_series

log = logging.getLogger(__name__)

SEGMENTATION_CLASSES = 3


def segmentation_spec(settings: InferenceSettings) -> ModelSpec:
    return ModelSpec(
        name=settings.segmentation_model,
        version=settings.segmentation_model_version,
        input_name="image",
        input_shape=(1, MODEL_SIZE, MODEL_SIZE),
        output_name="probabilities",
        output_shape=(SEGMENTATION_CLASSES, MODEL_SIZE, MODEL_SIZE),
    )


def classification_spec(settings: InferenceSettings) -> ModelSpec:
    return ModelSpec(
        name=settings.classification_model,
        version=settings.classification_model_version,
        input_name="image",
        input_shape=(CNN_CHANNELS, CNN_SIZE, CNN_SIZE),
        output_name="probability",
        output_shape=(1,),
    )


class InferenceClient:
    """Analyse series with the runner chosen by the settings (Triton or onnxruntime)."""

    def __init__(self, settings: InferenceSettings, runner: ModelRunner | None = None) -> None:
        self.settings = settings
        self.runner = runner or make_runner(settings)

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.runner.close()

    def _batched(
        self,
        spec: ModelSpec,
        x: NDArray[np.float32],
        deadline: Deadline,
        neighbours: bool = False,
    ) -> NDArray[np.float32]:
        """Run ``spec`` on the slices ``x`` in requests of ``batch_size``; with ``neighbours``
        each request stacks every slice with its neighbours (the CNN's input), batch by batch
        so that the 3-channel copy of the volume is never held whole."""
        n = self.settings.batch_size
        parts = [
            self.runner.infer(
                spec, with_neighbours(x, i, i + n) if neighbours else x[i : i + n], deadline
            )
            for i in range(0, len(x), n)
        ]
        return np.concatenate(parts) if parts else np.zeros((0, *spec.output_shape), np.float32)

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
        seg_spec = segmentation_spec(self.settings)
        cls_spec = classification_spec(self.settings)
        t = time.perf_counter()
        seg_id = self.runner.check_model(seg_spec, deadline)
        cls_id = self.runner.check_model(cls_spec, deadline)
        timings["check_models"] = time.perf_counter() - t

        t = time.perf_counter()
        x = to_model_input(volume.hu, volume.pixel_spacing)
        x_cnn = to_cnn_slices(volume.hu, volume.pixel_spacing)
        timings["preprocess"] = time.perf_counter() - t

        t = time.perf_counter()
        probs = self._batched(seg_spec, x, deadline)
        timings["segmentation"] = time.perf_counter() - t
        t = time.perf_counter()
        slice_probs = self._batched(cls_spec, x_cnn, deadline, neighbours=True)
        timings["classification"] = time.perf_counter() - t

        t = time.perf_counter()
        labels = labels_from_probabilities(probs, volume.pixel_spacing, volume.shape[1:])
        nodules = measure_nodules(labels, volume)
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


def analyse_series(paths: Iterable[Path | str], settings: InferenceSettings) -> Findings:
    """Convenience: one series with a fresh client."""
    with InferenceClient(settings) as client:
        return client.analyse_files(paths)
