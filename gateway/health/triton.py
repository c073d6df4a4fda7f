"""Triton and each model: the server ready, and every model the registered pipelines use
served and ready (with its version), red when not ready or listed but not loaded; models
Triton serves that no pipeline uses are listed too. When Triton does not answer, each model
is red with the time it was last seen ready."""

from __future__ import annotations

import socket
from dataclasses import replace
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


def _server_problem(settings: GatewaySettings, url: str) -> str | None:
    try:
        probes.check_triton_server(settings, url)
    except probes.ProbeError as exc:
        return str(exc)
    return None


def _merged(served: list[probes.ModelStatus]) -> list[probes.ModelStatus]:
    """One row per model and version over all servers: ready if ready on any (the workers
    fail over to it); the servers where it is ready are named."""
    by_key: dict[tuple[str, str], list[probes.ModelStatus]] = {}
    for model in served:
        by_key.setdefault((model.name, model.version), []).append(model)
    merged = []
    for rows in by_key.values():
        ready = [m for m in rows if m.ready]
        first = ready[0] if ready else rows[0]
        where = ", ".join(m.server for m in ready)
        merged.append(replace(first, server=where))
    return sorted(merged, key=lambda m: (m.name, m.version))


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
    expected = _expected_models(settings)
    seen_models = last_seen(engine, MODEL_PART)
    seen_servers = last_seen(engine, PART)
    servers = [(url, _server_problem(settings, url)) for url in settings.inference.grpc_urls]
    answering = [url for url, problem in servers if problem is None]
    rows: list[PartHealth] = []
    beats: list[Beat] = []
    served: list[probes.ModelStatus] = []
    for url, problem in servers:
        if problem is None:
            try:
                listed = probes.triton_models_at(settings, url)
            except probes.ProbeError as exc:
                problem = str(exc)
            else:
                served.extend(listed)
                rows.append(
                    PartHealth(PART, url, Level.GREEN, f"ready, {len(listed)} models listed", now)
                )
                beats.append(_beat(PART, url, {"models": len(listed)}))
                continue
        seen = seen_servers.get(url)
        # One server down while another answers: the workers fail over, so amber, not red.
        level = Level.AMBER if any(u != url for u in answering) else Level.RED
        rows.append(PartHealth(PART, url, level, problem, as_utc(seen) if seen else None))
    if not served and not answering:
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
    served = _merged(served)
    expected_names = {name for name, _ in expected}
    for model in served:
        if model.version == "-" and model.name in expected_names:
            continue  # listed, never loaded: shown below under the version a pipeline asks for
        key = f"{model.name}:{model.version}"
        users = sorted(
            {
                p
                for (n, v), ps in expected.items()
                if n == model.name and v in ("", model.version)
                for p in ps
            }
        )
        facts: tuple[tuple[str, str], ...] = (
            ("version", model.version),
            ("pipelines", ", ".join(users) or "none"),
        )
        if len(servers) > 1:
            facts += (("ready on", model.server or "none"),)
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
        in_repository = any(m.name == name and m.version == "-" for m in served)
        rows.append(
            PartHealth(
                MODEL_PART,
                key,
                Level.RED,
                "not loaded (in Triton's model repository, not loaded)"
                if in_repository
                else "not in Triton's model repository",
                as_utc(last) if last else None,
                (("pipelines", ", ".join(pipelines)),),
            )
        )
    return rows, beats
