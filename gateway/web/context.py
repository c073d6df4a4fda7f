"""What the views share: the settings and the engine, kept on the app, not in globals."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Engine

from gateway.settings import GatewaySettings

EXTENSION = "pacs_gateway"


@dataclass(frozen=True)
class WebContext:
    settings: GatewaySettings
    engine: Engine


def web_context() -> WebContext:
    context: WebContext = current_app.extensions[EXTENSION]
    return context
