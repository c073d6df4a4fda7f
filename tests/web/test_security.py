"""Security of the admin UI: every route refuses a signed-out user and a too-low role,
every POST needs the CSRF token, views are denied by default, sign-in is rate limited,
the session cookie is locked down, and passwords are hashed with salted scrypt."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Blueprint, Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from gateway.models import AuditEvent, User
from gateway.settings import GatewaySettings
from gateway.web import create_app
from gateway.web.passwords import hash_password, verify_password
from gateway.web.secret import secret_key
from gateway.web.security import view_policy
from gateway.web.users import Role, update_user
from tests.web.conftest import PASSWORD, csrf, sign_in, web_settings

PUBLIC = {"auth.login", "ops.healthz", "ops.readyz", "ops.metrics", "static"}
ORDER = [None, "viewer", "operator", "admin"]


def _routes(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) for every route, with placeholder arguments."""
    out = []
    for rule in app.url_map.iter_rules():
        values = {
            name: 1 if type(conv).__name__ == "IntegerConverter" else "x"
            for name, conv in rule._converters.items()
        }
        with app.test_request_context():
            from flask import url_for

            url = url_for(rule.endpoint, **values)
        for method in sorted((rule.methods or set()) & {"GET", "POST"}):
            out.append((rule.endpoint, method, url))
    return out


def test_every_view_declares_public_or_a_role(app: Flask) -> None:
    for endpoint in app.view_functions:
        is_public, role = view_policy(app, endpoint)
        assert is_public or role is not None, f"{endpoint} declares neither"
        assert is_public == (endpoint in PUBLIC), endpoint


def test_an_undeclared_view_is_denied_to_everyone(
    settings: GatewaySettings, engine: Engine, users: dict[str, int]
) -> None:
    app = create_app(settings, engine)
    extra = Blueprint("extra", __name__)
    extra.add_url_rule("/undeclared", "undeclared", lambda: "secret")
    app.register_blueprint(extra)
    client = app.test_client()
    assert client.get("/undeclared").status_code == 302  # to the sign-in page
    assert sign_in(client, "admin") == 302
    assert client.get("/undeclared").status_code == 403


def test_signed_out_users_are_refused_everywhere_but_public_routes(
    app: Flask, client_as: Callable[[str | None], FlaskClient]
) -> None:
    client = client_as(None)
    checked = 0
    for endpoint, method, url in _routes(app):
        if endpoint in PUBLIC:
            continue
        response = client.open(url, method=method, data={"csrf_token": csrf(client)})
        if method == "GET":
            assert response.status_code == 302, (method, url)
            assert response.location.startswith("/login"), (method, url)
        else:
            assert response.status_code == 401, (method, url)
        checked += 1
    assert checked >= 20


def test_too_low_roles_get_403(app: Flask, client_as: Callable[[str | None], FlaskClient]) -> None:
    clients = {role: client_as(role) for role in ("viewer", "operator")}
    checked = 0
    for endpoint, method, url in _routes(app):
        _, needed = view_policy(app, endpoint)
        if needed is None:
            continue
        for role, client in clients.items():
            if Role(role).allows(needed):
                continue
            response = client.open(url, method=method, data={"csrf_token": csrf(client)})
            assert response.status_code == 403, (role, method, url)
            checked += 1
    assert checked >= 10


def test_every_post_without_the_csrf_token_is_400(
    app: Flask, client_as: Callable[[str | None], FlaskClient]
) -> None:
    admin = client_as("admin")
    anonymous = client_as(None)
    posts = [(e, u) for e, m, u in _routes(app) if m == "POST"]
    assert len(posts) >= 8
    for endpoint, url in posts:
        client = anonymous if endpoint == "auth.login" else admin
        assert client.post(url, data={}).status_code == 400, url
        assert client.post(url, data={"csrf_token": "forged"}).status_code == 400, url


def test_no_route_edits_or_deletes_audit_events(app: Flask) -> None:
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("audit."):
            assert (rule.methods or set()) <= {"GET", "HEAD", "OPTIONS"}, rule
        assert not ({"PUT", "PATCH", "DELETE"} & (rule.methods or set())), rule


def test_sign_in_and_out_are_audited_and_rotate_the_session(
    app: Flask, users: dict[str, int], engine: Engine
) -> None:
    client = app.test_client()
    before = csrf(client)
    assert sign_in(client, "viewer") == 302
    assert csrf(client) != before  # a fresh session after signing in
    assert client.get("/").status_code == 200
    assert client.post("/logout", data={"csrf_token": csrf(client)}).status_code == 302
    assert client.get("/").status_code == 302
    with engine.connect() as connection:
        kinds = list(
            connection.execute(
                select(AuditEvent.kind).where(AuditEvent.actor == "viewer")
            ).scalars()
        )
    assert "user.login" in kinds and "user.logout" in kinds


def test_wrong_password_unknown_user_and_disabled_user_are_refused(
    app: Flask, users: dict[str, int], engine: Engine, settings: GatewaySettings
) -> None:
    client = app.test_client()
    assert sign_in(client, "viewer", "wrong password!") == 401
    assert sign_in(client, "nobody") == 401
    signed_in = app.test_client()
    assert sign_in(signed_in, "operator") == 302
    update_user(engine, settings.web, users["operator"], actor="test", enabled=False)
    assert signed_in.get("/").status_code == 302  # the session no longer counts
    assert sign_in(app.test_client(), "operator") == 401


def test_login_is_rate_limited_per_username_and_address(
    app: Flask, users: dict[str, int], engine: Engine
) -> None:
    client = app.test_client()
    for _ in range(5):
        assert sign_in(client, "admin", "not the password") == 401
    assert sign_in(client, "admin") == 429  # even the right password now
    other_address = app.test_client()
    other_address.environ_base["REMOTE_ADDR"] = "10.0.0.9"
    assert sign_in(other_address, "admin") == 302
    assert sign_in(client, "viewer") == 302  # another username from the same address
    with engine.connect() as connection:
        blocked = connection.execute(
            select(AuditEvent.actor, AuditEvent.source_address).where(
                AuditEvent.kind == "user.login_blocked"
            )
        ).all()
    assert [tuple(b) for b in blocked] == [("admin", "127.0.0.1")]


def test_next_only_redirects_within_the_site(app: Flask, users: dict[str, int]) -> None:
    client = app.test_client()
    for target, expected in (("/audit", "/audit"), ("https://evil.example/", "/"), ("//evil", "/")):
        response = client.post(
            "/login",
            data={
                "username": "viewer",
                "password": PASSWORD,
                "next": target,
                "csrf_token": csrf(client),
            },
        )
        assert response.status_code == 302 and response.location == expected


def test_session_cookie_is_secure_httponly_and_lax(
    tmp_path: Path, database_url: str, engine: Engine, users: dict[str, int]
) -> None:
    settings = web_settings(tmp_path / "data", database_url, web={"session_cookie_secure": True})
    app = create_app(settings, engine)
    client = app.test_client()
    response = client.post(
        "/login", data={"username": "viewer", "password": PASSWORD, "csrf_token": csrf(client)}
    )
    cookies = {c.split("=", 1)[0]: c for c in response.headers.getlist("Set-Cookie")}
    cookie = cookies["pacs_gateway_session"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    browser = cookies["pacs_gateway_browser"]  # the trusted-browser mark, for /login only
    assert "Secure" in browser and "HttpOnly" in browser and "SameSite=Strict" in browser
    assert "Path=/login" in browser


def test_security_headers(client_as: Callable[[str | None], FlaskClient]) -> None:
    response = client_as("viewer").get("/")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"
    assert "cdn" not in response.get_data(as_text=True).lower()


def test_passwords_are_salted_scrypt_with_parameters_in_the_hash(
    engine: Engine, users: dict[str, int]
) -> None:
    first, second = hash_password("s3cret password"), hash_password("s3cret password")
    assert first != second  # salted
    scheme, n, r, p, _salt, _digest = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(2**15), "8", "1")
    assert verify_password("s3cret password", first)
    assert not verify_password("s3cret passworD", first)
    assert not verify_password("s3cret password", "scrypt$garbage")
    assert verify_password("x" * 12, hash_password("x" * 12, n=2**10))  # parameters are read
    with engine.connect() as connection:
        stored = connection.execute(select(User.password_hash)).scalars().all()
    assert stored and all(h.startswith("scrypt$") and PASSWORD not in h for h in stored)


def test_generated_secret_key_is_kept_private_and_stable(settings: GatewaySettings) -> None:
    key = secret_key(settings)
    path = settings.data_dir / "web-secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert secret_key(settings) == key and len(key) >= 32


def test_a_short_configured_secret_key_is_refused(tmp_path: Path, database_url: str) -> None:
    settings = web_settings(tmp_path / "d", database_url, web={"secret_key": "short"})
    with pytest.raises(ValueError, match="at least 32"):
        secret_key(settings)
