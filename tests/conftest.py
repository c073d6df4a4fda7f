"""Shared fixtures: settings on temporary data dirs, migrated databases (SQLite and the real
PostgreSQL), and a gateway listener running in-process or as a real subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text

from gateway import migrate
from gateway.database import make_engine
from gateway.settings import ENV_PREFIX, GatewaySettings, load_settings

REPO = Path(__file__).resolve().parent.parent
POSTGRES_URL_ENV = "PACS_GATEWAY_TEST_POSTGRES_URL"
GATEWAY_AE = "PACSGATEWAY"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"expected a listener on port {port} within {timeout_s}s, found none")


def _postgres_url() -> str:
    url = os.environ.get(POSTGRES_URL_ENV)
    if not url:
        pytest.fail(
            f"{POSTGRES_URL_ENV} is not set: run the tests with `make test`, which starts "
            "PostgreSQL and sets it"
        )
    return url


def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind the gateway supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'gateway.db'}"
    url = _postgres_url()
    _reset_postgres(url)
    return url


def make_settings(data_dir: Path, database_url: str, **overrides: Any) -> GatewaySettings:
    dicom = {
        "ae_title": GATEWAY_AE,
        "host": "127.0.0.1",
        "port": free_port(),
        "allowed_peers": [{"ae_title": "*", "host": "127.0.0.1"}],
        **overrides.pop("dicom", {}),
    }
    return load_settings(
        None,
        data_dir=data_dir,
        database_url=database_url,
        dicom=dicom,
        storage={"min_free_mb": 0, **overrides.pop("storage", {})},
        assembly={"quiet_period_s": 1.0, "poll_interval_s": 0.2, **overrides.pop("assembly", {})},
        **overrides,
    )


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> GatewaySettings:
    return make_settings(tmp_path / "data", database_url)


@pytest.fixture
def engine(settings: GatewaySettings) -> Iterator[Engine]:
    engine = make_engine(settings)
    migrate.upgrade(settings, engine=engine)
    yield engine
    engine.dispose()


@dataclass
class RunningGateway:
    settings: GatewaySettings
    port: int
    stop: Callable[[], None]


@pytest.fixture
def start_gateway(engine: Engine) -> Iterator[Callable[[GatewaySettings], RunningGateway]]:
    """Start `serve()` in a thread of this process (listener + assembly)."""
    from gateway.service import serve

    running: list[tuple[threading.Event, threading.Thread]] = []

    def _start(settings: GatewaySettings) -> RunningGateway:
        stop = threading.Event()
        ready = threading.Event()
        ports: list[int] = []

        def _on_ready(bound: list[int]) -> None:
            ports.extend(bound)
            ready.set()

        thread = threading.Thread(
            target=serve,
            args=(settings,),
            kwargs={"stop": stop, "on_ready": _on_ready},
            daemon=True,
        )
        thread.start()
        assert ready.wait(20), "gateway did not start within 20 s"
        running.append((stop, thread))

        def _stop() -> None:
            stop.set()
            thread.join(timeout=20)

        return RunningGateway(settings=settings, port=ports[0], stop=_stop)

    yield _start
    for stop, thread in running:
        stop.set()
        thread.join(timeout=20)


@pytest.fixture
def gateway(settings: GatewaySettings, start_gateway: Any) -> RunningGateway:
    gw: RunningGateway = start_gateway(settings)
    return gw


def settings_environment(settings: GatewaySettings) -> dict[str, str]:
    """Environment variables equal to `settings`, for a gateway run as a subprocess."""
    import json

    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    dumped = settings.model_dump(mode="json")
    # Only the fields set explicitly apply over each pipeline's own selection: keep them so.
    dumped["routing"]["series_selection"] = settings.routing.series_selection.model_dump(
        mode="json", exclude_unset=True
    )
    for key, value in dumped.items():
        if value is not None:
            env[f"{ENV_PREFIX}{key.upper()}"] = (
                value if isinstance(value, str) else json.dumps(value)
            )
    return env


class GatewayProcess:
    """`pacs-gateway serve` as a real OS process (for crash tests and real-sender tests)."""

    def __init__(self, settings: GatewaySettings, workdir: Path) -> None:
        self.settings = settings
        self.log = workdir / "gateway.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=settings_environment(self.settings),
            )
        wait_for_port(self.settings.dicom.port)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def gateway_process(
    settings: GatewaySettings, engine: Engine, tmp_path: Path
) -> Iterator[GatewayProcess]:
    process = GatewayProcess(settings, tmp_path)
    process.start()
    yield process
    process.stop()
