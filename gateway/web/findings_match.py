"""Positive or negative: what a job's findings summary (the JSON the worker keeps on the job
row, workers/jobs/findings_store.summarise) says, read twice: in Python for the studies
list and as SQL for its search. Both readers follow the one rule below; the tests hold them
to the same answers.

A job is **positive** when its pipeline reported something to look at:
- an image-level finding marked present (the pipeline's threshold on its probability, the
  SR's Present/Absent): `image_findings[].present` in the generic form, and in the lung
  nodule form `nodule_probability` at or above its pipeline's classification threshold;
- a localised finding: a point finding, a segment of a component ('nodule-1': segment names
  hold no '-', component keys always do), or a lung nodule (`nodule_count` > 0).

It is **negative** when it has a findings summary and none of these; a job without one
(not yet inferred, or failed before) is neither.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, func, literal, not_, or_, select

from gateway.models import Job

LUNG_FORM_KEY = "nodule_count"  # the lung nodule pipeline's summary (its own keys)
GENERIC_FORM_KEY = "findings"  # every other pipeline's summary


class Verdict(enum.StrEnum):
    POSITIVE = "positive"
    NEGATIVE = "negative"


@dataclass(frozen=True)
class FindingsLine:
    """A job's findings at a glance: the verdict and a few words."""

    verdict: Verdict
    text: str


def _probability(value: Any) -> str:
    return f"p {float(value):.2f}" if isinstance(value, int | float) else "p ?"


def _lung_form(summary: Mapping[str, Any], threshold: float | None) -> FindingsLine:
    count = summary.get(LUNG_FORM_KEY)
    nodules = count if isinstance(count, int) else 0
    probability = summary.get("nodule_probability")
    words = [_probability(probability)]
    present = False
    if threshold is not None and isinstance(probability, int | float):
        present = float(probability) >= threshold
        words = [f"nodule {'present' if present else 'absent'} ({words[0]})"]
    if nodules:
        words.append(f"{nodules} segmented")
    verdict = Verdict.POSITIVE if nodules > 0 or present else Verdict.NEGATIVE
    return FindingsLine(verdict, ", ".join(words))


def _generic_form(summary: Mapping[str, Any]) -> FindingsLine:
    words: list[str] = []
    positive = False
    for finding in summary.get("image_findings") or []:
        present = finding.get("present") is True
        positive = positive or present
        state = "present" if present else "absent"
        words.append(
            f"{finding.get('name', '?')} {state} ({_probability(finding.get('probability'))})"
        )
    points = len(summary.get("point_findings") or [])
    components = sum(1 for f in summary.get(GENERIC_FORM_KEY) or [] if "-" in str(f.get("segment")))
    if points:
        words.append(f"{points} localised")
    if components:
        words.append(f"{components} segmented")
    positive = positive or points > 0 or components > 0
    return FindingsLine(
        Verdict.POSITIVE if positive else Verdict.NEGATIVE, ", ".join(words) or "nothing found"
    )


def read_findings(
    summary: Mapping[str, Any] | None, threshold: float | None
) -> FindingsLine | None:
    """The verdict of one job's summary; `threshold`: its pipeline's classification
    threshold (used by the lung nodule form, which keeps the probability only). None: no
    findings summary."""
    if not isinstance(summary, Mapping):
        return None
    if LUNG_FORM_KEY in summary:
        return _lung_form(summary, threshold)
    if isinstance(summary.get(GENERIC_FORM_KEY), list):
        return _generic_form(summary)
    return None


# --- the same rule as SQL (SQLite JSON1 or PostgreSQL json), on the `jobs` row ---------------


@dataclass(frozen=True)
class _Forms:
    """Per dialect: which form the summary has, and the generic form's positive test."""

    lung: ColumnElement[bool]
    generic: ColumnElement[bool]
    generic_positive: ColumnElement[bool]


def _sqlite() -> _Forms:
    def items(path: str) -> Any:
        return func.json_each(Job.summary, path).table_valued("value")

    def json_type(path: str) -> Any:
        return func.coalesce(func.json_type(Job.summary, path), "")

    image, segments = items("$.image_findings"), items(f"$.{GENERIC_FORM_KEY}")
    return _Forms(
        lung=json_type(f"$.{LUNG_FORM_KEY}") == "integer",
        generic=json_type(f"$.{GENERIC_FORM_KEY}") == "array",
        generic_positive=or_(
            select(literal(1))
            .select_from(image)
            .where(func.json_extract(image.c.value, "$.present") == 1)
            .exists(),
            func.coalesce(func.json_array_length(Job.summary, "$.point_findings"), 0) > 0,
            select(literal(1))
            .select_from(segments)
            .where(func.json_extract(segments.c.value, "$.segment").contains("-"))
            .exists(),
        ),
    )


def _postgresql() -> _Forms:
    def member(key: str) -> Any:
        return Job.summary.op("->")(literal(key))

    def items(key: str) -> Any:
        return func.json_array_elements(member(key)).table_valued("value")

    def json_type(key: str) -> Any:
        return func.coalesce(func.json_typeof(member(key)), "")

    image, segments = items("image_findings"), items(GENERIC_FORM_KEY)
    return _Forms(
        lung=json_type(LUNG_FORM_KEY) == "number",
        generic=json_type(GENERIC_FORM_KEY) == "array",
        generic_positive=or_(
            select(literal(1))
            .select_from(image)
            .where(image.c.value.op("->>")(literal("present")) == "true")
            .exists(),
            func.coalesce(func.json_array_length(member("point_findings")), 0) > 0,
            select(literal(1))
            .select_from(segments)
            .where(segments.c.value.op("->>")(literal("segment")).contains("-"))
            .exists(),
        ),
    )


def verdict_clause(
    verdict: Verdict, dialect: str, thresholds: Mapping[str, float]
) -> ColumnElement[bool]:
    """A condition on `jobs`, true for the jobs whose summary gives `verdict`.
    `thresholds`: the classification threshold per pipeline name (the lung nodule form)."""
    if dialect == "sqlite":
        forms = _sqlite()
    elif dialect == "postgresql":
        forms = _postgresql()
    else:
        raise ValueError(f"expected a sqlite or postgresql database, found {dialect}")
    count = func.coalesce(Job.summary[LUNG_FORM_KEY].as_integer(), 0)
    probability = func.coalesce(Job.summary["nodule_probability"].as_float(), -1.0)
    lung_positive = or_(
        count > 0,
        *(
            and_(Job.pipeline == name, probability >= threshold)
            for name, threshold in sorted(thresholds.items())
        ),
    )
    # Every part is NOT NULL (coalesce, EXISTS), so NOT below never meets an unknown.
    positive = or_(and_(forms.lung, lung_positive), forms.generic_positive)
    if verdict is Verdict.POSITIVE:
        return positive
    return and_(or_(forms.lung, forms.generic), not_(positive))
