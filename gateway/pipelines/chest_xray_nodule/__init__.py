"""The built-in chest radiograph nodule pipeline: described by pipeline.toml, analysed by
code in the workers (the radiograph preprocessing and the peak finding of the model card)."""

from __future__ import annotations

from pathlib import Path

from gateway.pipelines.registry import Pipeline, file_pipeline

DESCRIPTION_FILE = Path(__file__).resolve().parent / "pipeline.toml"
ANALYSER = "workers.inference.radiograph:RadiographAnalyser"


def pipeline() -> Pipeline:
    """The `pacs_gateway.pipelines` entry point `chest_xray_nodule`."""
    return file_pipeline(DESCRIPTION_FILE, analyser=ANALYSER)
