"""Triton and each model: the server ready, and every model the registered pipelines use
served and ready (with its version); models Triton serves that no pipeline uses are listed
too. When Triton does not answer, each model is red with the time it was last seen ready."""

from __future__ import annotations

import socket
from datetime import datetime

from sqlalchemy import Engine

from gateway.health.heartbeat import Beat, last_seen
from gateway.health.status import Level, PartHealth, as_utc
from gateway.settings import GatewaySettings
from gateway.web import probes

PART = "triton"
MODEL_PART = "model"


def _beat(part: str, name: str, detail: dict[str, object]) -> Beat:
    return Beat(name[:128], part, socket.gethostname(), 0, 0.0, detail)


def _expected_models(settings: GatewaySettings) -> dict[tuple[str, str], list[str]]:
    """(model name, version or '') -> the pipelines that use it."""
    expected: dict[tuple[str, str], list[str]] = {}
    for pipeline in settings.pipeline_registry():
        for model in pipeline.description.models:
            expected.setdefault((model.name, model.version or ""), []).append(pipeline.name)
    return expected


def triton_health(
    settings: GatewaySettings, engine: Engine, now: datetime
) -> tuple[list[PartHealth], list[Beat]]:
    inference = settings.inference
    if inference.runner != "triton":
        return [
            PartHealth(
                PART,
                "triton",
                Level.GREEN,
                f"not used: the models run in the workers ({inference.runner})",
                now,
            )
        ], []
    url = inference.triton_grpc_url
    expected = _expected_models(settings)
    seen_models = last_seen(engine, MODEL_PART)
    try:
        probes.check_triton(settings)
        served = probes.triton_models(settings)
    except probes.ProbeError as exc:
        server_seen = last_seen(engine, PART).get(url)
        rows = [
            PartHealth(PART, url, Level.RED, str(exc), as_utc(server_seen) if server_seen else None)
        ]
        for (name, version), pipelines in sorted(expected.items()):
            key = f"{name}:{version or 'latest'}"
            found = seen_models.get(key) or next(
                (t for n, t in seen_models.items() if n.startswith(f"{name}:") and not version),
                None,
            )
            rows.append(
                PartHealth(
                    MODEL_PART,
                    key,
                    Level.RED,
                    "unknown: Triton does not answer",
                    as_utc(found) if found else None,
                    (("pipelines", ", ".join(pipelines)),),
                )
            )
        return rows, []
    rows = [PartHealth(PART, url, Level.GREEN, f"ready, {len(served)} models listed", now)]
    beats = [_beat(PART, url, {"models": len(served)})]
    for model in served:
        key = f"{model.name}:{model.version}"
        users = sorted(
            {
                p
                for (n, v), ps in expected.items()
                if n == model.name and v in ("", model.version)
                for p in ps
            }
        )
        facts = (("version", model.version), ("pipelines", ", ".join(users) or "none"))
        if model.ready:
            rows.append(PartHealth(MODEL_PART, key, Level.GREEN, "ready", now, facts))
            beats.append(_beat(MODEL_PART, key, {"state": model.state}))
        else:
            last = seen_models.get(key)
            level = Level.RED if users else Level.AMBER
            rows.append(
                PartHealth(
                    MODEL_PART,
                    key,
                    level,
                    f"not ready: {model.state}",
                    as_utc(last) if last else None,
                    facts,
                )
            )
    for (name, version), pipelines in sorted(expected.items()):
        if any(m.name == name and version in ("", m.version) for m in served):
            continue
        key = f"{name}:{version or 'latest'}"
        last = seen_models.get(key)
        rows.append(
            PartHealth(
                MODEL_PART,
                key,
                Level.RED,
                "not in Triton's model repository",
                as_utc(last) if last else None,
                (("pipelines", ", ".join(pipelines)),),
            )
        )
    return rows, beats
