"""The built-in lung nodule pipeline: described by pipeline.toml, analysed by code in the
workers (two models: the U-Net label map and the nodule CNN's probability)."""

from __future__ import annotations

from pathlib import Path

from gateway.pipelines.description import PipelineDescription
from gateway.pipelines.registry import Pipeline, PipelineFileError, file_pipeline

DESCRIPTION_FILE = Path(__file__).resolve().parent / "pipeline.toml"
ANALYSER = "workers.inference.client:LungNoduleAnalyser"


def pipeline() -> Pipeline:
    """The `pacs_gateway.pipelines` entry point `lung_nodules`."""
    loaded = file_pipeline(DESCRIPTION_FILE, analyser=ANALYSER)
    check_supported(loaded.description, DESCRIPTION_FILE)
    return loaded


def check_supported(description: PipelineDescription, path: Path) -> None:
    """The lung analyser runs slice-wise models on FP32 slices in the reader's order: a
    description that asks for anything else is refused, never silently ignored."""
    problems = []
    for index, model in enumerate(description.models):
        p = model.preprocess
        checks = (
            ("preprocess.context", "'2d' or '2.5d'", p.context, p.context in ("2d", "2.5d")),
            (
                "preprocess.slice_order",
                "'along_normal'",
                p.slice_order,
                p.slice_order == "along_normal",
            ),
            ("dtype", "'FP32'", model.dtype, model.dtype == "FP32"),
        )
        problems += [
            f"  models.{index}.{field}: expected {expected} (the lung_nodules analyser), "
            f"found {found!r}"
            for field, expected, found, ok in checks
            if not ok
        ]
    if problems:
        raise PipelineFileError("\n".join([f"pipeline file {path}:", *problems]))
