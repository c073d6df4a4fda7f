"""The admin web UI's app factory: settings in, a Flask app out; no globals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, render_template
from sqlalchemy import Engine
from werkzeug.exceptions import HTTPException

from gateway.settings import GatewaySettings
from gateway.web.context import EXTENSION, WebContext
from gateway.web.secret import secret_key
from gateway.web.security import add_security_headers, csrf_token, current_user, enforce


def format_time(value: datetime | None) -> str:
    if value is None:
        return ""
    if value.tzinfo is None:  # SQLite gives naive UTC values back
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def create_app(settings: GatewaySettings, engine: Engine | None = None) -> Flask:
    """Build the app on a migrated database. Without `engine` the app makes its own from the
    settings. Seeds the settings' destinations the database lacks, as `serve` does."""
    from gateway.database import make_engine
    from gateway.delivery.registry import seed_from_settings
    from gateway.web.views import BLUEPRINTS

    app = Flask(__name__)
    web = settings.web
    app.config.update(
        SECRET_KEY=secret_key(settings),
        SESSION_COOKIE_NAME="pacs_gateway_session",
        SESSION_COOKIE_SECURE=web.session_cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=web.session_lifetime_s),
        MAX_CONTENT_LENGTH=1024 * 1024,
        TEMPLATES_AUTO_RELOAD=False,
    )
    engine = engine or make_engine(settings)
    seed_from_settings(engine, settings.destinations)
    app.extensions[EXTENSION] = WebContext(settings, engine)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.before_request(enforce)
    app.after_request(add_security_headers)
    app.jinja_env.filters["time"] = format_time
    app.jinja_env.globals["csrf_token"] = csrf_token  # also inside imported macros
    app.jinja_env.autoescape = True

    @app.context_processor
    def _template_globals() -> dict[str, Any]:
        return {"current_user": current_user()}

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[str, int]:
        return (
            render_template("error.html", code=exc.code, name=exc.name, text=exc.description),
            exc.code or 500,
        )

    return app
