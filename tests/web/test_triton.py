"""The models page and /readyz against the real Triton Inference Server (and the models
page's screenshot, from headless Chromium)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import Engine
from werkzeug.serving import make_server

from gateway.phantom import make_phantom, write_ct_series
from gateway.web import create_app
from tests.inference.conftest import start_triton
from tests.web.conftest import PASSWORD, WAIT_S, screenshot_dir, sign_in, web_settings
from workers.inference.client import analyse_series
from workers.triton_server import TritonServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = start_triton(tmp_path_factory.mktemp("triton"))
    try:
        yield server
    finally:
        server.stop()


def test_models_page_lists_what_triton_serves(
    triton: TritonServer,
    tmp_path: Path,
    database_url: str,
    engine: Engine,
    users: dict[str, int],
    browser: WebDriver,
) -> None:
    settings = web_settings(
        tmp_path / "data",
        database_url,
        inference={"triton_grpc_url": triton.grpc_url},
        queue={"broker_url": "redis://127.0.0.1:6379/11"},
        web={"probe_timeout_s": 5.0},
    )
    phantom = make_phantom(3, shape=(16, 128, 128), n_nodules=1)
    analyse_series(write_ct_series(phantom, tmp_path / "ct"), settings.inference)
    app = create_app(settings, engine)
    client = app.test_client()
    assert sign_in(client, "viewer") == 302
    page = client.get("/models").get_data(as_text=True)
    assert "Triton is unreachable" not in page
    for model in ("lung_nodule_unet", "nodule_cnn"):
        row = page.split(f"<td>{model}</td>")[1].split("</tr>")[0]
        assert row.startswith("<td>1</td><td>READY</td><td>yes</td>"), row
        inferences, latency = row.split("<td>")[4], row.split("<td>")[-1]
        assert int(inferences.split("<")[0]) >= 1 and float(latency.split("<")[0]) > 0, row
    pipelines = page.split('id="pipelines"')[1]
    lung = pipelines.split("<td>lung_nodules</td>")[1].split("</tr>")[0]
    assert "lung_nodule_unet:1 (served)" in lung and "nodule_cnn:1 (served)" in lung, lung
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.get_data(as_text=True)
    assert "triton: ok" in ready.get_data(as_text=True)
    assert "Triton:" not in client.get("/").get_data(as_text=True)

    shots = screenshot_dir(tmp_path, database_url)
    shots.mkdir(parents=True, exist_ok=True)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        browser.get(f"http://127.0.0.1:{server.server_port}/models")
        browser.find_element(By.ID, "username").send_keys("viewer")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "sign-in").click()
        WebDriverWait(browser, WAIT_S).until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "table#models"))
        )
        browser.save_screenshot(str(shots / "models.png"))
    finally:
        server.shutdown()
        thread.join(timeout=30)
