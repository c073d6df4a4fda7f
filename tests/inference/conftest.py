"""Fixtures of the inference tests: a real tritonserver on free ports, phantom series."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.inference_config import InferenceSettings
from gateway.phantom import Phantom, make_phantom, write_ct_series
from workers.triton_server import DEFAULT_TRITON_VENV, TritonServer, free_port

REPO = Path(__file__).resolve().parents[2]
MODEL_REPOSITORY = REPO / "triton_models"


def start_triton(tmp_dir: Path) -> TritonServer:
    if not DEFAULT_TRITON_VENV.exists():
        pytest.fail(
            f"expected the Triton environment at {DEFAULT_TRITON_VENV}, found none: "
            "run `bash triton_models/setup_triton_env.sh` first"
        )
    server = TritonServer(
        MODEL_REPOSITORY,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_path=tmp_dir / "tritonserver.log",
        startup_timeout_s=120,
    )
    return server.start()


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = start_triton(tmp_path_factory.mktemp("triton"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def triton_settings(triton_server: TritonServer) -> InferenceSettings:
    return InferenceSettings(
        runner="triton",
        triton_grpc_url=triton_server.grpc_url,
        model_repository=MODEL_REPOSITORY,
        request_timeout_s=30,
        deadline_s=120,
        backoff_initial_s=0.2,
    )


@pytest.fixture()
def onnx_settings() -> InferenceSettings:
    return InferenceSettings(runner="onnxruntime", model_repository=MODEL_REPOSITORY)


@pytest.fixture(scope="session")
def nodule_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Phantom, list[Path]]:
    """A 40-slice phantom with 3 nodules written as CT files (held-out seed)."""
    phantom = make_phantom(
        6001,
        shape=(40, 512, 512),
        spacing=(2.5, 0.7, 0.7),
        n_nodules=3,
        nodule_diameter_mm=(10.0, 25.0),
    )
    paths = write_ct_series(phantom, tmp_path_factory.mktemp("nodule_series"))
    return phantom, paths
