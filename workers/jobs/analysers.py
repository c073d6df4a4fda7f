"""A pipeline's analyser: its own code when it registered one, else the generic analyser
that runs its description."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from gateway.pipelines.findings import PipelineFindings
from gateway.pipelines.registry import Pipeline
from gateway.results.declared import ConvertibleFindings
from gateway.settings import GatewaySettings


class Analyser(Protocol):
    """Series files in, findings out (generic, or a record that translates itself)."""

    def analyse_files(
        self, paths: Iterable[Path | str]
    ) -> PipelineFindings | ConvertibleFindings: ...

    def close(self) -> None: ...


def make_analyser(settings: GatewaySettings, pipeline: Pipeline) -> Analyser:
    """The analyser of `pipeline`: its registered code ('module:attribute', called as
    ``factory(inference_settings, description=...)``) or the generic one."""
    if pipeline.analyser is None:
        from workers.inference.generic import DescribedAnalyser

        return DescribedAnalyser(settings.inference, pipeline.description)
    module, _, attribute = pipeline.analyser.partition(":")
    factory = getattr(importlib.import_module(module), attribute)
    analyser: Analyser = factory(settings.inference, description=pipeline.description)
    return analyser
