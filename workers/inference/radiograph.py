"""The analyser of projection-image pipelines (``chest_xray_nodule``): one radiograph through
its model on the configured runner (Triton or onnxruntime, with their deadlines, retries and
circuit breaker), with the model card's preprocessing and peak finding
(workers/inference/chest_xray.py), into typed findings: the image-level probability and one
point per localised finding."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray

from gateway.inference_config import InferenceSettings
from gateway.pipelines.description import Localisation, PipelineDescription, Preprocess
from gateway.pipelines.findings import (
    ImageFinding,
    ModelIdentity,
    PipelineFindings,
    PointFinding,
)
from workers.inference.chest_xray import (
    CXR_SIZE,
    CXR_SPACING_MM,
    PERCENTILES,
    RadiographGrid,
    image_probability,
    radiograph_findings,
    radiograph_spacing,
    to_radiograph_input,
)
from workers.inference.declared import model_spec
from workers.inference.errors import PermanentInferenceError
from workers.inference.generic import calibrated
from workers.inference.runners import Deadline, ModelRunner, OwnsRunner, make_runner

log = logging.getLogger(__name__)


def _check_preprocess(model: str, p: Preprocess) -> None:
    """The description must declare what this code does (the model card's contract)."""
    found = (p.method, p.size, p.spacing_mm, tuple(p.percentiles))
    want = ("radiograph", CXR_SIZE, CXR_SPACING_MM, PERCENTILES)
    if found != want:
        raise ValueError(
            f"model {model!r}: expected preprocess (method, size, spacing_mm, percentiles) "
            f"{want}, found {found}"
        )


def _pair(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    values = [float(v) for v in value]  # type: ignore[attr-defined]  # a DICOM DS pair
    return (values[0], values[1]) if len(values) == 2 else None


class RadiographAnalyser(OwnsRunner):
    """Analyse one projection image as its pipeline file declares (classification and
    localisation from one probability map)."""

    def __init__(
        self,
        settings: InferenceSettings,
        description: PipelineDescription,
        runner: ModelRunner | None = None,
    ) -> None:
        if description.classification is None or description.localisation is None:
            raise ValueError(
                f"pipeline {description.name!r}: expected [classification] and [localisation], "
                "found one missing"
            )
        if description.classification.model != description.localisation.model:
            raise ValueError(
                f"pipeline {description.name!r}: expected classification and localisation "
                "from one model"
            )
        self.model = description.model(description.localisation.model)
        _check_preprocess(self.model.name, self.model.preprocess)
        self.settings = settings
        self.description = description
        self.runner = runner or make_runner(settings)

    def analyse_files(self, paths: Iterable[Path | str]) -> PipelineFindings:
        files = list(paths)
        if len(files) != 1:
            raise PermanentInferenceError(f"expected one radiograph, found {len(files)} files")
        t0 = time.perf_counter()
        ds = pydicom.dcmread(files[0])
        read_s = time.perf_counter() - t0
        findings = self.analyse_dataset(ds)
        findings.timings_s["read"] = read_s
        findings.timings_s["total"] = time.perf_counter() - t0
        return findings

    def analyse_dataset(self, ds: pydicom.Dataset) -> PipelineFindings:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        try:
            pixels = np.asarray(ds.pixel_array)
            rescale = (
                float(ds.get("RescaleSlope", 1.0) or 1.0),
                float(ds.get("RescaleIntercept", 0.0) or 0.0),
            )
            spacing = radiograph_spacing(
                _pair(ds.get("ImagerPixelSpacing")), _pair(ds.get("PixelSpacing")), pixels.shape
            )
            x, grid = to_radiograph_input(
                pixels, spacing, str(ds.get("PhotometricInterpretation", "")), rescale
            )
        except (ValueError, AttributeError, NotImplementedError) as exc:
            raise PermanentInferenceError(f"radiograph unusable: {exc}") from exc
        timings["preprocess"] = time.perf_counter() - t
        deadline = Deadline(self.settings.deadline_s)
        spec = model_spec(self.model)
        t = time.perf_counter()
        identity = self.runner.check_model(spec, deadline)
        timings["check_models"] = time.perf_counter() - t
        t = time.perf_counter()
        score_map = self.runner.infer(spec, x, deadline)[0, 0]
        timings["inference"] = time.perf_counter() - t
        t = time.perf_counter()
        classification = self.description.classification
        localisation = self.description.localisation
        assert classification is not None and localisation is not None  # checked in __init__
        probability = calibrated(image_probability(score_map), classification)
        points = self._points(score_map, grid, localisation, str(ds.SOPInstanceUID), spacing)
        timings["postprocess"] = time.perf_counter() - t
        log.info(
            "radiograph analysed by %s: probability %.3f, %d localised finding(s), runner=%s",
            self.description.name,
            probability,
            len(points),
            self.runner.name,
        )
        return PipelineFindings(
            pipeline=self.description.name,
            # no label map: a SEG has nothing to outline (one empty slice keeps the type)
            labels=np.zeros((1, 1, 1), dtype=np.uint8),
            sop_instance_uids=(str(ds.SOPInstanceUID),),
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "") or ""),
            segments=(),
            image_findings=(
                ImageFinding(
                    classification.name, probability, probability >= classification.threshold
                ),
            ),
            models=(ModelIdentity(identity.name, identity.version),),
            runner=self.runner.name,
            timings_s=timings,
            point_findings=points,
        )

    @staticmethod
    def _points(
        score_map: NDArray[np.float32],
        grid: RadiographGrid,
        localisation: Localisation,
        sop_instance_uid: str,
        spacing: tuple[float, float],
    ) -> tuple[PointFinding, ...]:
        found = radiograph_findings(score_map, grid, localisation.threshold)
        radius_px = localisation.radius_mm / ((spacing[0] + spacing[1]) / 2.0)
        return tuple(
            PointFinding(
                name=localisation.name,
                index=i,
                sop_instance_uid=sop_instance_uid,
                row=f.row,
                column=f.column,
                radius_px=radius_px,
                probability=f.probability,
            )
            for i, f in enumerate(found[: localisation.max_findings], start=1)
        )
