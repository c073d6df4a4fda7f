"""Typed results of the inference of one series (they live in gateway/pipelines, where the
results writers use them too)."""

from gateway.pipelines.findings import ModelIdentity, PipelineFindings
from gateway.pipelines.lung_nodules.findings import (
    LABEL_BACKGROUND,
    LABEL_LUNG,
    LABEL_NAMES,
    LABEL_NODULE,
    Findings,
    NoduleFinding,
)

__all__ = [
    "LABEL_BACKGROUND",
    "LABEL_LUNG",
    "LABEL_NAMES",
    "LABEL_NODULE",
    "Findings",
    "ModelIdentity",
    "NoduleFinding",
    "PipelineFindings",
]
