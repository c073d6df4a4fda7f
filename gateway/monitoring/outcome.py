"""What one job says about its study, read from the job's findings summary (no patient data):
the study-level score, present or absent, and how many findings. Both summary forms are read:
the lung nodule analyser's (`nodule_probability`, `nodule_count`) and the generic one
(`image_findings`, `findings`, `point_findings`; workers/jobs/findings_store.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from gateway.pipelines.description import PipelineDescription

_COMPONENT = re.compile(r"-\d+$")  # 'nodule-1': one finding of a per-component segment
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class StudyOutcome:
    score: float | None
    """The study's probability (the classification's), None if the pipeline has none."""
    positive: bool | None
    """Present (True) or absent (False); None when the summary tells neither."""
    findings: int
    """Localised findings: components of per-component segments plus points."""


def classification_threshold(description: PipelineDescription | None) -> float:
    if description is None or description.classification is None:
        return DEFAULT_THRESHOLD
    return description.classification.threshold


def study_outcome(
    summary: dict[str, Any] | None, description: PipelineDescription | None = None
) -> StudyOutcome | None:
    """The outcome, or None for a summary without findings (a job that never inferred).
    `description`: the pipeline's, whose classification threshold decides present for the
    lung nodule summary (which records only the probability)."""
    if not summary:
        return None
    if "nodule_probability" in summary:
        score = float(summary["nodule_probability"])
        findings = int(summary.get("nodule_count", 0))
        return StudyOutcome(score, score >= classification_threshold(description), findings)
    if "findings" not in summary and "image_findings" not in summary:
        return None
    images = summary.get("image_findings") or []
    points = summary.get("point_findings") or []
    components = [f for f in summary.get("findings") or [] if _COMPONENT.search(f["segment"])]
    findings = len(components) + len(points)
    if images:
        return StudyOutcome(
            max(float(f["probability"]) for f in images),
            any(bool(f["present"]) for f in images),
            findings,
        )
    if points:
        return StudyOutcome(max(float(p["probability"]) for p in points), True, findings)
    return StudyOutcome(None, findings > 0, findings)
