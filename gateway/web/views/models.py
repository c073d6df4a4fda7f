"""What Triton serves (each model's version, readiness, inference count and mean latency),
and the registered pipelines with whether Triton serves each of their models."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Blueprint, render_template

from gateway.web import probes
from gateway.web.context import web_context
from gateway.web.security import requires_role
from gateway.web.users import Role

blueprint = Blueprint("models", __name__)


@blueprint.route("/models")
@requires_role(Role.VIEWER)
def index() -> str:
    settings = web_context().settings
    models: list[probes.ModelStatus] = []
    problem = None
    server_problems: list[str] = []
    if settings.inference.runner != "triton":
        problem = (
            "The models run in the workers with onnxruntime (inference.runner), not on Triton."
        )
    else:
        servers = probes.triton_servers(settings)
        models = [m for s in servers for m in s.models]
        failing = [s.problem for s in servers if s.problem]
        if len(failing) == len(servers):
            problem = f"Triton is unreachable: {'; '.join(failing)}"
        else:
            server_problems = [f"A Triton server is unreachable: {p}" for p in failing]
    ready = {(m.name, m.version) for m in models if m.ready}
    pipelines = [
        PipelineRow(
            name=p.description.name,
            version=p.description.version,
            title=p.description.title,
            origin=p.origin,
            models=[
                (
                    m.identity,
                    "unknown"
                    if problem
                    else (
                        "served"
                        if any(n == m.name and (not m.version or v == m.version) for n, v in ready)
                        else "not served"
                    ),
                )
                for m in p.description.models
            ],
        )
        for p in settings.pipeline_registry()
    ]
    return render_template(
        "models.html",
        models=models,
        problem=problem,
        server_problems=server_problems,
        url=", ".join(settings.inference.grpc_urls),
        several=len(settings.inference.grpc_urls) > 1,
        pipelines=pipelines,
    )


@dataclass(frozen=True)
class PipelineRow:
    name: str
    version: str
    title: str
    origin: str
    models: list[tuple[str, str]]  # (identity, served / not served / unknown)
