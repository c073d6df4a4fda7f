"""The health grid's model cells with the real Triton Inference Server answering throughout:
one model unloaded (Triton's explicit model control, as an operator or a failed reload
leaves it) turns that model red alone, with its version, its pipelines and when it was last
ready; Triton and the other models stay green; loaded again, it is green again. And a model
of the repository that Triton did not load: red under the version its pipeline asks for
("not loaded"), not as missing from the repository beside a stray versionless cell."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient
from flask.testing import FlaskClient

from gateway.settings import GatewaySettings
from tests.conftest import free_port
from tests.inference.conftest import MODEL_REPOSITORY
from tests.pipeline.harness import wait_until
from tests.web.conftest import web_settings
from tests.web.health_cells import Cell, health_cells
from workers.triton_server import TritonServer

Client = Callable[[str | None], FlaskClient]
MODELS = ("chest_xray_nodule:1", "lung_nodule_unet:1", "nodule_cnn:1")
EVERY_MODEL = ("--model-control-mode=explicit", "--load-model=*")
TWO_MODELS = (
    "--model-control-mode=explicit",
    "--load-model=lung_nodule_unet",
    "--load-model=nodule_cnn",
)


@pytest.fixture
def triton_args() -> tuple[str, ...]:
    return EVERY_MODEL


@pytest.fixture
def triton(tmp_path: Path, triton_args: tuple[str, ...]) -> Iterator[TritonServer]:
    server = TritonServer(
        MODEL_REPOSITORY,
        http_port=free_port(),
        grpc_port=free_port(),
        metrics_port=free_port(),
        log_path=tmp_path / "triton.log",
        startup_timeout_s=180,
        extra_args=triton_args,
    )
    server.start(wait=False)
    loaded = [a.split("=", 1)[1] for a in triton_args if a.startswith("--load-model=")]
    with grpcclient.InferenceServerClient(url=server.grpc_url) as probe:

        def ready() -> bool:
            try:
                names = ["chest_xray_nodule", "lung_nodule_unet", "nodule_cnn"]
                wanted = names if loaded == ["*"] else loaded
                return bool(probe.is_server_ready()) and all(
                    probe.is_model_ready(n) for n in wanted
                )
            except Exception:
                return False

        try:
            wait_until(ready, 180, f"Triton ready with {loaded}")
        except AssertionError:
            server.stop()
            raise
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(tmp_path: Path, database_url: str, triton: TritonServer) -> GatewaySettings:
    return web_settings(
        tmp_path / "data",
        database_url,
        inference={"triton_grpc_url": triton.grpc_url},
        web={"probe_timeout_s": 5.0},
    )


def _models(client: FlaskClient, triton: TritonServer) -> dict[str, Cell]:
    response = client.get("/")
    assert response.status_code == 200, response.status_code
    cells = health_cells(response.get_data(as_text=True))
    triton_cell = cells[("triton", triton.grpc_url)]
    assert triton_cell.level == "green", triton_cell  # Triton answers throughout
    return {name: cell for (part, name), cell in cells.items() if part == "model"}


def _state(control: grpcclient.InferenceServerClient, name: str) -> str:
    index = control.get_model_repository_index(as_json=True)
    return str(next(m.get("state", "") for m in index["models"] if m["name"] == name))


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_model_unloaded_while_triton_answers_is_red_alone_then_green_again(
    triton: TritonServer, client_as: Client
) -> None:
    client = client_as("viewer")
    models = _models(client, triton)
    assert set(models) == set(MODELS), models
    for name in MODELS:
        assert models[name].level == "green", models[name]
        assert f"version {name.split(':')[1]}" in models[name].text, models[name]

    with grpcclient.InferenceServerClient(url=triton.grpc_url) as control:
        control.unload_model("nodule_cnn")
        # Triton is not ready while the model unloads (strict readiness); then it is again.
        wait_until(lambda: _state(control, "nodule_cnn") == "UNAVAILABLE", 60, "unloaded")
        wait_until(control.is_server_ready, 30, "Triton ready again")
        models = _models(client, triton)
        assert set(models) == set(MODELS), models  # the same cell, not another one
        down = models["nodule_cnn:1"]
        assert down.level == "red", down
        assert "not ready: UNAVAILABLE" in down.text and "pipelines lung_nodules" in down.text
        assert "last heartbeat never" not in down.text, down  # when it was last ready
        for name in ("chest_xray_nodule:1", "lung_nodule_unet:1"):
            assert models[name].level == "green", models[name]

        control.load_model("nodule_cnn")
        wait_until(control.is_server_ready, 30, "Triton ready again")
        models = _models(client, triton)
        assert {n: c.level for n, c in models.items()} == dict.fromkeys(MODELS, "green")


@pytest.mark.slow
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("triton_args", [TWO_MODELS])
def test_a_model_triton_did_not_load_is_red_under_the_version_its_pipeline_asks_for(
    triton: TritonServer, client_as: Client
) -> None:
    models = _models(client_as("viewer"), triton)
    assert set(models) == set(MODELS), models
    never = models["chest_xray_nodule:1"]
    assert never.level == "red", never
    assert "not loaded" in never.text and "pipelines chest_xray_nodule" in never.text, never
    assert "not in Triton's model repository" not in never.text, never
    assert models["lung_nodule_unet:1"].level == "green"
    assert models["nodule_cnn:1"].level == "green"
