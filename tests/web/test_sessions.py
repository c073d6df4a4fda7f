"""Revocable web sessions and the sign-in limits (issue 10, findings 4 and 5), on SQLite and
PostgreSQL: a copied session cookie stops working after logout, a password reset, a role
change, a disable and an admin's "End"; the login limits count per address over all users
and per user over all addresses, and a lock answers the right password exactly as a wrong
one; a page number out of range never answers 500."""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from gateway.audit import utcnow
from gateway.models import AuditEvent, WebSession
from gateway.web import create_app
from gateway.web.security import SESSION_TOKEN
from tests.web.conftest import PASSWORD, csrf, sign_in, web_settings

COOKIE = "pacs_gateway_session"
WRONG = "not the password at all"


def _thief_of(app: Flask, victim: FlaskClient) -> FlaskClient:
    """Another client holding a copy of the victim's session cookie (as a stolen one)."""
    cookie = victim.get_cookie(COOKIE)
    assert cookie is not None
    thief = app.test_client()
    thief.set_cookie(COOKIE, cookie.value)
    return thief


def _signed_in(client: FlaskClient) -> bool:
    response = client.get("/")
    assert response.status_code in (200, 302), response.status_code
    return response.status_code == 200


def _audit(engine: Engine, kind: str) -> list[AuditEvent]:
    with Session(engine) as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.kind == kind).order_by(AuditEvent.id)
            )
        )


def _end_reasons(engine: Engine, user_id: int) -> list[str | None]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(WebSession.end_reason).where(WebSession.user_id == user_id)
            ).scalars()
        )


def test_a_copied_cookie_is_refused_after_logout(
    app: Flask, client_as: Callable[[str | None], FlaskClient], engine: Engine
) -> None:
    victim = client_as("viewer")
    other_browser = client_as("viewer")
    thief = _thief_of(app, victim)
    assert _signed_in(thief)  # the copy works while the session lives
    assert victim.post("/logout", data={"csrf_token": csrf(victim)}).status_code == 302
    assert not _signed_in(thief)
    assert not _signed_in(other_browser)  # signing out ends every session of the user
    logout = _audit(engine, "user.logout")[-1]
    assert logout.detail == {"sessions_ended": 2}


def test_a_copied_cookie_is_refused_after_an_admin_resets_the_password(
    app: Flask,
    client_as: Callable[[str | None], FlaskClient],
    engine: Engine,
    users: dict[str, int],
) -> None:
    victim = client_as("operator")
    thief = _thief_of(app, victim)
    assert _signed_in(thief)
    admin = client_as("admin")
    response = admin.post(
        f"/users/{users['operator']}",
        data={"password": "a brand new long password", "csrf_token": csrf(admin)},
    )
    assert response.status_code == 302
    assert not _signed_in(thief) and not _signed_in(victim)
    assert _signed_in(admin)  # the admin's own session is untouched
    assert _end_reasons(engine, users["operator"]) == ["password changed"]
    assert sign_in(app.test_client(), "operator", "a brand new long password") == 302


@pytest.mark.parametrize(
    ("form", "reason"),
    [({"role": "viewer"}, "role changed"), ({"enabled": "false"}, "user disabled")],
)
def test_a_copied_cookie_is_refused_after_a_role_change_or_disable(
    app: Flask,
    client_as: Callable[[str | None], FlaskClient],
    engine: Engine,
    users: dict[str, int],
    form: dict[str, str],
    reason: str,
) -> None:
    victim = client_as("operator")
    thief = _thief_of(app, victim)
    assert _signed_in(thief)
    admin = client_as("admin")
    admin.post(f"/users/{users['operator']}", data={**form, "csrf_token": csrf(admin)})
    assert not _signed_in(thief)
    assert _end_reasons(engine, users["operator"]) == [reason]
    if "enabled" in form:  # enabled again, the old cookie still signs nobody in
        admin.post(
            f"/users/{users['operator']}", data={"enabled": "true", "csrf_token": csrf(admin)}
        )
        assert not _signed_in(thief)


def test_an_admin_sees_and_ends_a_session(
    app: Flask,
    client_as: Callable[[str | None], FlaskClient],
    engine: Engine,
    users: dict[str, int],
) -> None:
    victim = app.test_client()
    victim.environ_base["HTTP_USER_AGENT"] = "RadiologyWorkstation/7.1 " + "x" * 300
    victim.environ_base["REMOTE_ADDR"] = "10.20.30.40"
    assert sign_in(victim, "viewer") == 302
    thief = _thief_of(app, victim)
    admin = client_as("admin")
    page = admin.get("/users").get_data(as_text=True)
    assert "RadiologyWorkstation/7.1" in page and "10.20.30.40" in page
    with engine.connect() as connection:
        row = connection.execute(
            select(WebSession.id, WebSession.user_agent).where(
                WebSession.user_id == users["viewer"]
            )
        ).one()
    assert len(row.user_agent) == 200  # truncated
    assert f"/users/sessions/{row.id}/end" in page
    response = admin.post(f"/users/sessions/{row.id}/end", data={"csrf_token": csrf(admin)})
    assert response.status_code == 302
    assert not _signed_in(thief) and not _signed_in(victim)
    assert "RadiologyWorkstation/7.1" not in admin.get("/users").get_data(as_text=True)
    (event,) = _audit(engine, "user.session_ended")
    assert event.actor == "admin" and event.detail == {"user": "viewer", "session": row.id}
    again = admin.post(
        f"/users/sessions/{row.id}/end", data={"csrf_token": csrf(admin)}, follow_redirects=True
    )
    assert "expected a live session" in again.get_data(as_text=True)
    assert len(_audit(engine, "user.session_ended")) == 1


def test_only_a_hash_of_the_session_token_is_stored(
    client_as: Callable[[str | None], FlaskClient], engine: Engine
) -> None:
    client = client_as("viewer")
    with client.session_transaction() as session:
        token = session[SESSION_TOKEN]
    with engine.connect() as connection:
        stored = connection.execute(select(WebSession.token_sha256)).scalars().all()
    assert stored == [hashlib.sha256(token.encode()).hexdigest()]
    assert token not in stored


def test_an_idle_session_is_refused_by_the_server(
    app: Flask, client_as: Callable[[str | None], FlaskClient], engine: Engine
) -> None:
    """The cookie's own expiry is up to the browser (or a thief); the row's is not."""
    client = client_as("viewer")
    assert _signed_in(client)
    lifetime = app.extensions["pacs_gateway"].settings.web.session_lifetime_s
    with engine.begin() as connection:
        connection.execute(
            update(WebSession).values(last_seen_at=utcnow() - timedelta(seconds=lifetime + 1))
        )
    assert not _signed_in(client)
    with engine.connect() as connection:
        assert connection.execute(select(WebSession.end_reason)).scalar_one() == "idle"


@pytest.fixture
def strict_app(tmp_path: Path, database_url: str, engine: Engine, users: dict[str, int]) -> Flask:
    """Small limits, so the tests stay fast: 3 per username and address, 6 per address, 6
    per username."""
    settings = web_settings(
        tmp_path / "data",
        database_url,
        web={
            "login_max_failures": 3,
            "login_max_failures_per_address": 6,
            "login_max_failures_per_user": 6,
        },
    )
    app = create_app(settings, engine)
    app.config["TESTING"] = True
    return app


def _from(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_the_per_address_limit_slows_a_spray_over_many_usernames(
    strict_app: Flask, engine: Engine
) -> None:
    sprayer = _from(strict_app, "10.1.1.1")
    for number in range(6):  # one guess per name: the per-name limit never triggers
        assert sign_in(sprayer, f"user{number}", WRONG) == 401
    assert sign_in(sprayer, "admin") == 429  # any name, even with the right password
    assert sign_in(sprayer, "viewer", WRONG) == 429
    assert sign_in(_from(strict_app, "10.1.1.2"), "admin") == 302  # elsewhere unaffected
    locked = _audit(engine, "user.login_locked")
    assert [(e.actor, e.source_address, e.detail["limit"]) for e in locked] == [
        ("user5", "10.1.1.1", "address")
    ]
    blocked = _audit(engine, "user.login_blocked")
    assert [(e.actor, e.detail["limit"]) for e in blocked] == [
        ("admin", "address"),
        ("viewer", "address"),
    ]


def test_the_per_user_limit_counts_over_many_addresses_but_spares_a_trusted_browser(
    strict_app: Flask, engine: Engine
) -> None:
    usual_browser = _from(strict_app, "10.9.9.9")
    assert sign_in(usual_browser, "admin") == 302  # trusted from now on, for admin
    assert usual_browser.post("/logout", data={"csrf_token": csrf(usual_browser)}).status_code
    for number in range(6):  # one guess per address: the per-address limits never trigger
        assert sign_in(_from(strict_app, f"10.2.0.{number}"), "admin", WRONG) == 401
    assert sign_in(_from(strict_app, "10.2.0.99"), "admin") == 429  # a fresh address
    assert sign_in(_from(strict_app, "10.2.0.99"), "viewer") == 302  # other users unaffected
    assert sign_in(usual_browser, "admin") == 302  # the user's own browser still signs in
    locked = _audit(engine, "user.login_locked")
    assert [(e.actor, e.detail["limit"]) for e in locked] == [("admin", "username")]


def test_a_trusted_browser_has_its_own_limit(strict_app: Flask) -> None:
    browser = _from(strict_app, "10.3.0.1")
    assert sign_in(browser, "admin") == 302
    for _ in range(3):
        assert sign_in(browser, "admin", WRONG) == 401
    assert sign_in(browser, "admin") == 429
    assert sign_in(_from(strict_app, "10.3.0.1"), "admin") == 302  # untrusted count is apart


def _timed_attempt(client: FlaskClient, password: str) -> tuple[int, bytes, float]:
    token = csrf(client)
    started = time.perf_counter()
    response = client.post(
        "/login", data={"username": "admin", "password": password, "csrf_token": token}
    )
    return response.status_code, response.get_data(), time.perf_counter() - started


def test_a_locked_account_answers_the_right_password_as_a_wrong_one(
    strict_app: Flask, engine: Engine
) -> None:
    unlocked = _from(strict_app, "10.4.0.2")
    checked = [_timed_attempt(unlocked, WRONG)[2] for _ in range(2)]  # runs scrypt
    attacker = _from(strict_app, "10.4.0.1")
    for _ in range(3):
        assert _timed_attempt(attacker, WRONG)[0] == 401
    right = [_timed_attempt(attacker, PASSWORD) for _ in range(5)]
    wrong = [_timed_attempt(attacker, WRONG) for _ in range(5)]
    answers = {(status, body) for status, body, _ in right + wrong}
    assert len(answers) == 1, "the right password answered differently from a wrong one"
    ((status, body),) = answers
    assert status == 429 and b"Too many failed sign-ins" in body
    # Same timing class: neither checks the password (a check costs one scrypt).
    scrypt_s = statistics.median(checked)
    for label, attempts in (("right", right), ("wrong", wrong)):
        median = statistics.median(t for _, _, t in attempts)
        assert median < scrypt_s / 2, (label, median, scrypt_s)
    assert not _audit(engine, "user.login")  # and nobody was signed in


@pytest.mark.parametrize("path", ["/audit", "/studies"])
@pytest.mark.parametrize(
    "page", ["1" + "0" * 30, "9" * 5000, "9223372036854775807", "-3", "0", "x", "٣"]
)
def test_a_page_number_out_of_range_is_clamped_never_500(
    client_as: Callable[[str | None], FlaskClient], path: str, page: str
) -> None:
    response = client_as("viewer").get(path, query_string={"page": page})
    assert response.status_code == 200, (path, page[:20], response.status_code)
    assert "page 1 of 1" in response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("method", "url", "form"),
    [
        ("GET", "/audit?actor=a%00b", None),
        ("GET", "/studies?uid=1.2%00", None),
        ("GET", "/studies/1.2%003", None),
        ("POST", "/login", {"username": "adm\x00in", "password": PASSWORD}),
    ],
)
def test_a_nul_character_is_refused_with_400_not_a_database_error(
    client_as: Callable[[str | None], FlaskClient],
    method: str,
    url: str,
    form: dict[str, str] | None,
) -> None:
    """PostgreSQL cannot store NUL in text: without the check these answered 500 there."""
    client = client_as("viewer" if form is None else None)
    data = None if form is None else {**form, "csrf_token": csrf(client)}
    response = client.open(url, method=method, data=data)
    assert response.status_code == 400, (url, response.status_code)
    assert "without NUL" in response.get_data(as_text=True)
