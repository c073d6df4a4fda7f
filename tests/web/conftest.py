"""Fixtures of the admin web UI tests: an app on the real databases (SQLite and
PostgreSQL), users of each role, and a signed-in test client per role."""

from __future__ import annotations

import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait
from sqlalchemy import Engine
from werkzeug.serving import make_server

from gateway import migrate
from gateway.database import make_engine
from gateway.settings import GatewaySettings
from gateway.web import create_app
from gateway.web.users import Role, create_user
from tests.conftest import REPO, make_settings

PASSWORD = "correct horse battery staple"
ROLES = ("viewer", "operator", "admin")
SCREENSHOTS = REPO / "docs" / "screenshots"


def screenshot_dir(tmp_path: Path, database_url: str) -> Path:
    """docs/screenshots/ when asked for (`make screenshots`), else a temporary folder: a test
    run must not rewrite tracked files."""
    if os.environ.get("PACS_GATEWAY_SAVE_SCREENSHOTS") and database_url.startswith("sqlite"):
        return SCREENSHOTS
    return tmp_path / "shots"


WAIT_S = 60


def web_settings(data_dir: Path, database_url: str, **overrides: object) -> GatewaySettings:
    """Settings where Triton and the broker are down unless `overrides` say otherwise."""
    sections: dict[str, dict[str, object]] = {
        "web": {"session_cookie_secure": False, "probe_timeout_s": 1.0},
        "inference": {"triton_grpc_url": "127.0.0.1:1"},  # nothing listens there
        "queue": {"broker_url": "redis://127.0.0.1:1/0"},
    }
    for name, values in sections.items():
        values.update(overrides.pop(name, {}))  # type: ignore[call-overload]
    return make_settings(data_dir, database_url, **sections, **overrides)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> GatewaySettings:
    return web_settings(
        tmp_path / "data",
        database_url,
        destinations=[
            {"kind": "dicom", "name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 1},
            {"kind": "dicomweb", "name": "web", "url": "http://127.0.0.1:1/dicom-web"},
        ],
    )


@pytest.fixture
def engine(settings: GatewaySettings) -> Iterator[Engine]:
    engine = make_engine(settings)
    migrate.upgrade(settings, engine=engine)
    yield engine
    engine.dispose()


@pytest.fixture
def app(settings: GatewaySettings, engine: Engine) -> Flask:
    app = create_app(settings, engine)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def users(settings: GatewaySettings, engine: Engine) -> dict[str, int]:
    return {
        role: create_user(engine, settings.web, role, PASSWORD, Role(role), actor="test")
        for role in ROLES
    }


def csrf(client: FlaskClient) -> str:
    """The session's CSRF token (made as a rendered form would)."""
    with client.session_transaction() as session:
        token = session.get("csrf_token")
        if token is None:
            token = session["csrf_token"] = secrets.token_urlsafe(24)
    return str(token)


def sign_in(client: FlaskClient, username: str, password: str = PASSWORD) -> int:
    response = client.post(
        "/login", data={"username": username, "password": password, "csrf_token": csrf(client)}
    )
    return response.status_code


@pytest.fixture
def client_as(app: Flask, users: dict[str, int]) -> Callable[[str | None], FlaskClient]:
    def make(role: str | None) -> FlaskClient:
        client = app.test_client()
        if role is not None:
            assert sign_in(client, role) == 302
        return client

    return make


def _chromedriver() -> str:
    path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not Path(path).exists():
        pytest.fail(
            "expected chromedriver (Debian packages chromium and chromium-driver; "
            "scripts/ensure-system-packages.sh installs them), found none"
        )
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """Headless Chromium driven by Selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        options.add_argument(argument)
    binary = shutil.which("chromium")
    if binary:
        options.binary_location = binary
    driver = webdriver.Chrome(service=Service(_chromedriver()), options=options)
    driver.set_page_load_timeout(WAIT_S)
    yield driver
    driver.quit()


@contextmanager
def served(app: Flask) -> Iterator[str]:
    """The app on a free port, served by werkzeug in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=30)


def sign_in_browser(driver: WebDriver, username: str, password: str = PASSWORD) -> None:
    """Fill in the login form the browser shows (it must be on its way there)."""
    WebDriverWait(driver, WAIT_S).until(
        expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "#login-form"))
    )
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "sign-in").click()
