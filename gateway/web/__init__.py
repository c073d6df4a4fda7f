"""The admin web UI: a Flask app factory with one blueprint per area."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy import Engine

    from gateway.settings import GatewaySettings


def create_app(settings: GatewaySettings, engine: Engine | None = None) -> Flask:
    """Build the admin app (imported lazily: the settings module imports this package)."""
    from gateway.web.app import create_app as _create_app

    return _create_app(settings, engine)
