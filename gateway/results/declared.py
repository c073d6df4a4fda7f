"""Findings with the pipeline description that declares how they become DICOM."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pydicom.sr.coding import Code

from gateway.pipelines.description import CodeDescription, PipelineDescription
from gateway.pipelines.findings import PipelineFindings


class ConvertibleFindings(Protocol):
    """A pipeline's own findings record that translates itself (the lung nodule analyser's)."""

    timings_s: dict[str, float]

    def pipeline_findings(
        self, description: PipelineDescription | None = None
    ) -> PipelineFindings: ...

    def default_description(self) -> PipelineDescription: ...


@dataclass(frozen=True)
class DeclaredFindings:
    findings: PipelineFindings
    description: PipelineDescription


def declared(
    findings: PipelineFindings | ConvertibleFindings,
    description: PipelineDescription | None = None,
) -> DeclaredFindings:
    """Generic findings and their description. A pipeline's own record brings its default
    description; generic findings need the one of their pipeline."""
    if isinstance(findings, PipelineFindings):
        if description is None:
            raise ValueError(
                f"expected the description of pipeline {findings.pipeline!r}, found none"
            )
        generic = findings
    else:
        description = description or findings.default_description()
        generic = findings.pipeline_findings(description)
    if generic.pipeline != description.name:
        raise ValueError(
            f"expected findings of pipeline {description.name!r}, found {generic.pipeline!r}"
        )
    return DeclaredFindings(generic, description)


def code(concept: CodeDescription) -> Code:
    return Code(concept.value, concept.scheme, concept.meaning)
