"""Checks of the parts the gateway depends on, each with a timeout: the database, the
broker, Celery workers, Triton (server and models)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import Engine, text

from gateway.queue.broker import resolve_broker_url
from gateway.settings import GatewaySettings


class ProbeError(Exception):
    """A dependency did not answer as expected; the message says what was found."""


def tcp_check(host: str, port: int, timeout_s: float) -> None:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except OSError as exc:
        raise ProbeError(
            f"expected a listener at {host}:{port}, found {exc.strerror or type(exc).__name__}"
        ) from exc


def check_database(engine: Engine) -> None:
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        raise ProbeError(f"expected the database to answer, found {type(exc).__name__}") from exc


def broker_url(settings: GatewaySettings) -> str:
    return resolve_broker_url(settings)


def describe_url(url: str) -> str:
    """Scheme, host and port only: never a password."""
    parsed = urlparse(url)
    if parsed.hostname:
        port = f":{parsed.port}" if parsed.port else ""
        return f"{parsed.scheme}://{parsed.hostname}{port}"
    return f"{parsed.scheme}://(local file)"


def check_broker(settings: GatewaySettings) -> str:
    """The broker's description when reachable; raises ProbeError otherwise."""
    url = broker_url(settings)
    parsed = urlparse(url)
    if parsed.scheme in ("redis", "rediss", "amqp", "amqps", "pyamqp"):
        default_port = 6379 if parsed.scheme.startswith("redis") else 5672
        tcp_check(
            parsed.hostname or "127.0.0.1",
            parsed.port or default_port,
            settings.web.probe_timeout_s,
        )
    return describe_url(url)


def count_workers(settings: GatewaySettings) -> int | None:
    """Celery workers answering a ping within the timeout; None when the broker cannot
    broadcast (the embedded SQLite broker) or is unreachable."""
    url = broker_url(settings)
    if not url.startswith(("redis://", "rediss://", "amqp://", "pyamqp://")):
        return None
    from gateway.queue.app import make_celery

    app = make_celery(settings, url)
    try:
        replies = app.control.ping(timeout=min(1.0, settings.web.probe_timeout_s))
    except Exception:
        return None
    finally:
        app.close()
    return len(replies or [])


def _triton_client(url: str) -> Any:
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(url=url)


def check_triton_server(settings: GatewaySettings, url: str) -> None:
    """One Triton server answers and is ready, within the probe timeout."""
    timeout = settings.web.probe_timeout_s
    host, _, port = url.rpartition(":")
    tcp_check(host or "127.0.0.1", int(port), timeout)
    client = _triton_client(url)
    try:
        ready = client.is_server_ready(client_timeout=timeout)
    except Exception as exc:
        raise ProbeError(f"expected Triton at {url} to answer, found {type(exc).__name__}") from exc
    finally:
        client.close()
    if not ready:
        raise ProbeError(f"expected Triton at {url} ready, found not")


def check_triton(settings: GatewaySettings) -> None:
    """Ready when at least one of the Triton servers is: the workers fail over to it (the
    health grid shows each server). Raises ProbeError naming every server's problem."""
    if settings.inference.runner != "triton":
        return
    problems = []
    for url in settings.inference.grpc_urls:
        try:
            check_triton_server(settings, url)
        except ProbeError as exc:
            problems.append(str(exc))
        else:
            return
    raise ProbeError("; ".join(problems))


@dataclass(frozen=True)
class ModelStatus:
    name: str
    version: str
    state: str
    ready: bool
    inference_count: int
    execution_count: int
    mean_latency_ms: float | None
    failures: int
    server: str = ""
    """The Triton server (host:port) this row is about."""


@dataclass(frozen=True)
class ServerModels:
    """What one Triton server serves, or why it is unknown."""

    url: str
    models: list[ModelStatus]
    problem: str | None


def triton_servers(settings: GatewaySettings) -> list[ServerModels]:
    """Every configured Triton server with its models (or its problem), each probed with the
    probe timeout."""
    servers = []
    for url in settings.inference.grpc_urls:
        try:
            servers.append(ServerModels(url, triton_models_at(settings, url), None))
        except ProbeError as exc:
            servers.append(ServerModels(url, [], str(exc)))
    return servers


def triton_models(settings: GatewaySettings) -> list[ModelStatus]:
    """What the Triton servers serve, one row per server and model, with its statistics.
    Raises ProbeError when no server answers."""
    servers = triton_servers(settings)
    if all(s.problem for s in servers):
        raise ProbeError("; ".join(s.problem or "" for s in servers))
    return [m for s in servers for m in s.models]


def triton_models_at(settings: GatewaySettings, url: str) -> list[ModelStatus]:
    """What the Triton server at ``url`` serves. Raises ProbeError when unreachable."""
    timeout = settings.web.probe_timeout_s
    host, _, port = url.rpartition(":")
    tcp_check(host or "127.0.0.1", int(port), timeout)
    client = _triton_client(url)
    try:
        index = client.get_model_repository_index(as_json=True, client_timeout=timeout)
        stats = client.get_inference_statistics(as_json=True, client_timeout=timeout)
        by_key: dict[tuple[str, str], dict[str, Any]] = {
            (s.get("name", ""), s.get("version", "")): s for s in stats.get("model_stats", [])
        }
        models = []
        for entry in index.get("models", []):
            name = entry.get("name", "")
            version = entry.get("version", "")
            state = entry.get("state", "UNKNOWN")
            try:
                ready = bool(client.is_model_ready(name, version, client_timeout=timeout))
            except Exception:
                ready = False
            stat = by_key.get((name, version), {})
            success = stat.get("inference_stats", {}).get("success", {})
            count = int(success.get("count", 0) or 0)
            ns = int(success.get("ns", 0) or 0)
            models.append(
                ModelStatus(
                    name=name,
                    version=version or "-",
                    state=state,
                    ready=ready,
                    inference_count=int(stat.get("inference_count", 0) or 0),
                    execution_count=int(stat.get("execution_count", 0) or 0),
                    mean_latency_ms=(ns / count / 1e6) if count else None,
                    failures=int(
                        stat.get("inference_stats", {}).get("fail", {}).get("count", 0) or 0
                    ),
                    server=url,
                )
            )
    except ProbeError:
        raise
    except Exception as exc:
        raise ProbeError(
            f"expected Triton at {url} to list its models, found {type(exc).__name__}"
        ) from exc
    finally:
        client.close()
    return sorted(models, key=lambda m: (m.name, m.version))
