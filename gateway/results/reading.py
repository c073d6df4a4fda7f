"""Reading our SR back: the image-level findings of a TID 1500 report (report.py writes them
as report-level qualitative evaluations, TID 1500 rows 12-14)."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

from gateway.results import codes


@dataclass(frozen=True)
class ReportedImageFinding:
    finding: tuple[str, str, str]
    """(code value, coding scheme, meaning) of the finding, e.g. SCT 27925004 Nodule."""
    present: bool
    probability: float | None


def _code(sequence: Dataset) -> tuple[str, str, str]:
    return (
        str(sequence.CodeValue),
        str(sequence.CodingSchemeDesignator),
        str(sequence.CodeMeaning),
    )


def _key(code: Code) -> tuple[str, str]:
    return (code.value, code.scheme_designator)


def reported_image_findings(sr: Dataset) -> list[ReportedImageFinding]:
    """Each finding of the report's Qualitative Evaluations: present or absent, and the
    probability that follows it (None if none does)."""
    container = next(
        (
            item
            for item in sr.ContentSequence
            if _code(item.ConceptNameCodeSequence[0])[:2] == _key(codes.QUALITATIVE_EVALUATIONS)
        ),
        None,
    )
    if container is None:
        return []
    out: list[ReportedImageFinding] = []
    for item in container.ContentSequence:
        name = _code(item.ConceptNameCodeSequence[0])
        if item.ValueType == "CODE":
            value = _code(item.ConceptCodeSequence[0])[:2]
            out.append(ReportedImageFinding(name, value == _key(codes.PRESENT), None))
        elif item.ValueType == "TEXT" and name[:2] == _key(codes.PROBABILITY) and out:
            last = out[-1]
            out[-1] = ReportedImageFinding(last.finding, last.present, float(item.TextValue))
    return out
