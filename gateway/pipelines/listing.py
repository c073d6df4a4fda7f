"""`pacs-gateway pipelines`: what is registered and whether Triton serves its models;
`pacs-gateway pipelines check FILE`: validate a pipeline file and say why not."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from gateway.pipelines.registry import PipelineFileError, load_pipeline_file
from gateway.settings import GatewaySettings


def check_file(path: Path, out: TextIO) -> int:
    try:
        description = load_pipeline_file(path)
    except PipelineFileError as exc:
        print(exc, file=out)
        return 1
    models = ", ".join(m.identity for m in description.models)
    print(f"{path}: valid pipeline {description.name} {description.version} ({models})", file=out)
    return 0


def served_models(settings: GatewaySettings) -> tuple[set[tuple[str, str]], str | None]:
    """(name, version) of every model Triton has ready, or why they are unknown. Uses the
    web UI's probe, with its timeout (web.probe_timeout_s)."""
    if settings.inference.runner != "triton":
        return set(), f"runner is {settings.inference.runner}, not triton"
    from gateway.web.probes import ProbeError, triton_models

    try:
        statuses = triton_models(settings)
    except ProbeError as exc:
        return set(), str(exc)
    return {(s.name, s.version) for s in statuses if s.ready}, None


def list_pipelines(settings: GatewaySettings, out: TextIO) -> int:
    registry = settings.pipeline_registry()
    served, problem = served_models(settings)
    if problem:
        print(f"Triton: {problem}", file=out)
    for pipeline in registry:
        d = pipeline.description
        code = f", analyser {pipeline.analyser}" if pipeline.analyser else ""
        print(f"{d.name} {d.version}: {d.title}", file=out)
        print(f"  origin: {pipeline.origin}{code}", file=out)
        for m in d.models:
            if problem:
                state = "unknown"
            else:
                ready = any(n == m.name and (not m.version or v == m.version) for n, v in served)
                state = "served" if ready else "NOT served"
            print(f"  model {m.key}: {m.identity} ({state})", file=out)
    return 0
