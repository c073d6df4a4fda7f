"""Admins make and revoke DICOMweb tokens in the UI: the secret is shown once, on the page
that answers the form, and works; it is never shown again nor kept in clear; other roles
cannot reach the page; the DICOMweb routes ignore the UI's sign-in and CSRF."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from gateway import migrate
from gateway.database import make_engine
from gateway.models import ApiToken, AuditEvent
from gateway.web import create_app
from gateway.web.users import Role, create_user
from tests.web.conftest import PASSWORD, csrf, sign_in, web_settings


@pytest.fixture
def app_and_engine(tmp_path: Path, database_url: str) -> Iterator[tuple[Flask, Engine]]:
    settings = web_settings(tmp_path / "data", database_url)
    engine = make_engine(settings)
    migrate.upgrade(settings, engine=engine)
    for role in ("viewer", "operator", "admin"):
        create_user(engine, settings.web, role, PASSWORD, Role(role), actor="test")
    app = create_app(settings, engine)
    app.config["TESTING"] = True
    yield app, engine
    engine.dispose()


def _signed_in(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    assert sign_in(client, role) == 302
    return client


def test_an_admin_makes_a_token_sees_it_once_and_revokes_it(
    app_and_engine: tuple[Flask, Engine],
) -> None:
    app, engine = app_and_engine
    admin = _signed_in(app, "admin")
    page = admin.post(
        "/api-tokens/new",
        data={"client_name": "PACS1", "scope": "read", "csrf_token": csrf(admin)},
    )
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    match = re.search(r'id="token-secret">(pgw_[A-Za-z0-9_-]+)<', page.get_data(as_text=True))
    assert match is not None
    secret = match.group(1)
    listing = admin.get("/api-tokens").get_data(as_text=True)
    assert "PACS1" in listing and secret not in listing
    with engine.connect() as connection:
        token = connection.execute(select(ApiToken.__table__)).one()
    assert token.scope == "read" and token.created_by == "admin"
    assert secret not in repr(token)
    # at rest only its SHA-256, computed here independently of the gateway's code
    assert token.token_sha256 == hashlib.sha256(secret.encode()).hexdigest()
    # the token works on /dicomweb, with no session and no CSRF token
    anonymous = app.test_client()
    headers = {"Authorization": f"Bearer {secret}"}
    assert anonymous.get("/dicomweb/studies", headers=headers).status_code == 200
    assert anonymous.post("/dicomweb/studies", headers=headers).status_code == 403  # read only
    revoked = admin.post(f"/api-tokens/{token.id}/revoke", data={"csrf_token": csrf(admin)})
    assert revoked.status_code == 302
    assert anonymous.get("/dicomweb/studies", headers=headers).status_code == 401
    with engine.connect() as connection:
        kinds = list(connection.execute(select(AuditEvent.kind)).scalars())
    assert "api_token.created" in kinds and "api_token.revoked" in kinds


def test_names_are_checked_and_never_reused(app_and_engine: tuple[Flask, Engine]) -> None:
    app, _ = app_and_engine
    admin = _signed_in(app, "admin")
    for name in ("has space", "x" * 17, ""):
        reply = admin.post(
            "/api-tokens/new",
            data={"client_name": name, "scope": "both", "csrf_token": csrf(admin)},
            follow_redirects=True,
        )
        assert "Not created" in reply.get_data(as_text=True), name
    admin.post(
        "/api-tokens/new",
        data={"client_name": "VIEWER1", "scope": "both", "csrf_token": csrf(admin)},
    )
    again = admin.post(
        "/api-tokens/new",
        data={"client_name": "VIEWER1", "scope": "both", "csrf_token": csrf(admin)},
        follow_redirects=True,
    )
    assert "taken" in again.get_data(as_text=True)


def test_only_admins_reach_the_page(app_and_engine: tuple[Flask, Engine]) -> None:
    app, _ = app_and_engine
    for role in ("viewer", "operator"):
        client = _signed_in(app, role)
        assert client.get("/api-tokens").status_code == 403
        reply = client.post(
            "/api-tokens/new",
            data={"client_name": "X", "scope": "both", "csrf_token": csrf(client)},
        )
        assert reply.status_code == 403
    admin = _signed_in(app, "admin")
    assert (
        admin.post("/api-tokens/new", data={"client_name": "X", "scope": "both"}).status_code == 400
    )
    assert "API tokens" in admin.get("/").get_data(as_text=True)  # in the navigation
