"""Pipeline fixtures: PostgreSQL (the production database), a private Redis, Triton, Orthanc
(DICOM + DICOMweb), and `pipeline` that starts the gateway and workers on them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from gateway.phantom import make_phantom, write_ct_series
from gateway.settings import GatewaySettings
from tests.conftest import (
    GATEWAY_AE,
    _postgres_url,
    _reset_postgres,
    free_port,
    make_settings,
    wait_for_port,
)
from tests.delivery.conftest import pacs  # noqa: F401  (the session Orthanc)
from tests.inference.conftest import MODEL_REPOSITORY, start_triton
from tests.integration.orthanc import ORTHANC_AE, Orthanc
from tests.pipeline.harness import Process, RedisServer
from workers.triton_server import TritonServer

GATEWAY_IN_ORTHANC = "GATEWAY"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """PostgreSQL only: the pipeline is proven on the production database (SQLite is
    covered by the `pacs-gateway run` test)."""
    url = _postgres_url()
    _reset_postgres(url)
    return url


@pytest.fixture(scope="session")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = start_triton(tmp_path_factory.mktemp("pipeline-triton"))
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, free_port())
    server.start()
    yield server
    server.stop()


@dataclass
class Pipeline:
    settings: GatewaySettings
    engine: Engine
    gateway: Process
    workers: list[Process]
    redis: RedisServer
    tmp: Path

    def start_worker(self, concurrency: int | None = None) -> Process:
        settings = self.settings
        if concurrency is not None:
            settings = settings.model_copy(
                update={
                    "queue": settings.queue.model_copy(update={"worker_concurrency": concurrency})
                }
            )
        worker = Process("worker", settings, self.tmp / f"worker{len(self.workers)}.log")
        self.workers.append(worker.start())
        return worker

    def logs(self) -> str:
        return "\n".join(
            [f"--- gateway\n{self.gateway.log_tail()}"]
            + [f"--- worker\n{w.log_tail()}" for w in self.workers]
        )


def pipeline_settings(
    settings: GatewaySettings,
    redis_url: str,
    grpc_url: str,
    destinations: list[dict[str, Any]],
    **overrides: Any,
) -> GatewaySettings:
    inference = {
        "runner": "triton",
        "triton_grpc_url": grpc_url,
        "model_repository": str(MODEL_REPOSITORY),
        "deadline_s": 20,
        "max_retries": 2,
        "backoff_initial_s": 0.2,
        "circuit_reset_s": 2,
        **overrides.pop("inference", {}),
    }
    return make_settings(
        settings.data_dir,
        settings.sqlalchemy_url,
        destinations=destinations,
        routing=overrides.pop(
            "routing",
            {
                "rules": [
                    {
                        "name": "chest-ct",
                        "conditions": [{"attribute": "modality", "value": "CT"}],
                        "pipeline": "lung_nodules",
                    }
                ],
                "series_selection": {"min_slices": 4},
            },
        ),
        queue={
            "broker_url": redis_url,
            "worker_concurrency": 1,
            "retry_backoff_initial_s": 1,
            "retry_backoff_max_s": 3,
            "router_poll_interval_s": 0.3,
            "task_time_limit_s": 300,
            "visibility_timeout_s": 400,
            **overrides.pop("queue", {}),
        },
        delivery={
            "connect_timeout_s": 3,
            "response_timeout_s": 20,
            "backoff_initial_s": 1,
            "backoff_max_s": 2,
            "max_attempts": 100,
            "poll_interval_s": 0.5,
            **overrides.pop("delivery", {}),
        },
        inference=inference,
        **overrides,
    )


def orthanc_destination(server: Orthanc) -> dict[str, Any]:
    return {
        "kind": "dicom",
        "name": "orthanc",
        "ae_title": ORTHANC_AE,
        "host": "127.0.0.1",
        "port": server.dicom_port,
    }


@pytest.fixture
def start_pipeline(
    settings: GatewaySettings,
    engine: Engine,
    redis_server: RedisServer,
    tmp_path: Path,
) -> Iterator[Callable[..., Pipeline]]:
    started: list[Pipeline] = []

    def _start(
        grpc_url: str, destinations: list[dict[str, Any]], workers: int = 1, **overrides: Any
    ) -> Pipeline:
        configured = pipeline_settings(
            settings, redis_server.url, grpc_url, destinations, **overrides
        )
        gateway = Process("serve", configured, tmp_path / "gateway.log").start()
        wait_for_port(configured.dicom.port)
        pipeline = Pipeline(configured, engine, gateway, [], redis_server, tmp_path)
        started.append(pipeline)
        for _ in range(workers):
            pipeline.start_worker()
        return pipeline

    yield _start
    for pipeline in started:
        for worker in pipeline.workers:
            worker.stop()
        pipeline.gateway.stop()


def phantom_study(out_dir: Path, seed: int, shape: tuple[int, int, int] = (32, 256, 256)) -> Any:
    phantom = make_phantom(
        seed, shape=shape, spacing=(2.5, 1.4, 1.4), n_nodules=2, nodule_diameter_mm=(12.0, 22.0)
    )
    return phantom, write_ct_series(phantom, out_dir)


__all__ = ["GATEWAY_AE", "GATEWAY_IN_ORTHANC", "phantom_study"]
