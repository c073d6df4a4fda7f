"""What Triton serves: each model's version, readiness, inference count and mean latency."""

from __future__ import annotations

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
    if settings.inference.runner != "triton":
        problem = (
            "The models run in the workers with onnxruntime (inference.runner), not on Triton."
        )
    else:
        try:
            models = probes.triton_models(settings)
        except probes.ProbeError as exc:
            problem = f"Triton is unreachable: {exc}"
    return render_template(
        "models.html", models=models, problem=problem, url=settings.inference.triton_grpc_url
    )
