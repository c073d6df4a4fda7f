"""The built-in lung nodule pipeline: described by pipeline.toml, analysed by code in the
workers (two models: the U-Net label map and the nodule CNN's probability)."""

from __future__ import annotations

from pathlib import Path

from gateway.pipelines.registry import Pipeline, file_pipeline

DESCRIPTION_FILE = Path(__file__).resolve().parent / "pipeline.toml"
ANALYSER = "workers.inference.client:LungNoduleAnalyser"


def pipeline() -> Pipeline:
    """The `pacs_gateway.pipelines` entry point `lung_nodules`."""
    return file_pipeline(DESCRIPTION_FILE, analyser=ANALYSER)
