"""The gateway's web server with DICOMweb on a migrated database of each kind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from gateway import migrate
from gateway.database import make_engine
from tests.conftest import make_settings
from tests.dicomweb.server import ThreadedWebServer, WebServer


@pytest.fixture
def start_web(tmp_path: Path, database_url: str) -> Iterator[Callable[..., WebServer]]:
    """Start the web server on settings with these overrides (once per test)."""
    started: list[tuple[ThreadedWebServer, Engine]] = []

    def _start(**overrides: Any) -> WebServer:
        data_dir = overrides.pop("data_dir", tmp_path / "data")
        settings = make_settings(data_dir, database_url, **overrides)
        engine = make_engine(settings)
        migrate.upgrade(settings, engine=engine)
        server = ThreadedWebServer(settings, engine)
        started.append((server, engine))
        return server.start()

    yield _start
    for server, engine in started:
        server.stop()
        engine.dispose()


@pytest.fixture
def web(start_web: Callable[..., WebServer]) -> WebServer:
    return start_web()
