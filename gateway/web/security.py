"""Sign-in (a live server-side session, `sessions.py`), roles and CSRF for every request.

Deny by default: a view is reachable only when it declares either `public` or the minimal
role it needs (`requires_role`); an undeclared view answers 403 to everyone. Every POST
carries the session's CSRF token in the `csrf_token` form field (or the X-CSRF-Token
header), compared in constant time; without it the answer is 400.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, abort, current_app, g, redirect, request, session, url_for
from werkzeug.wrappers import Response

from gateway.web.context import web_context
from gateway.web.sessions import resolve_session
from gateway.web.users import Account, Role, get_account

F = TypeVar("F", bound=Callable[..., Any])

PUBLIC_ATTRIBUTE = "pacs_public"
ROLE_ATTRIBUTE = "pacs_minimal_role"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_TOKEN = "session_token"  # the cookie's key for the server-side session's token


def public(view: F) -> F:
    """Reachable without signing in."""
    setattr(view, PUBLIC_ATTRIBUTE, True)
    return view


def requires_role(role: Role) -> Callable[[F], F]:
    """The minimal role a signed-in user needs for this view."""

    def decorate(view: F) -> F:
        setattr(view, ROLE_ATTRIBUTE, role)
        return view

    return decorate


def csrf_token() -> str:
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[CSRF_FIELD] = token
    return token


def current_user() -> Account | None:
    user: Account | None = g.get("user")
    return user


def client_address() -> str:
    return (request.remote_addr or "unknown")[:64]


def client_user_agent() -> str:
    """The User-Agent header, printable characters only (it is shown to admins and stored)."""
    return "".join(c for c in request.headers.get("User-Agent", "") if c.isprintable())


def view_policy(app: Flask, endpoint: str) -> tuple[bool, Role | None]:
    """(public, minimal role) declared by the view of `endpoint`."""
    view = app.view_functions.get(endpoint)
    if endpoint == "static":
        return True, None
    return bool(getattr(view, PUBLIC_ATTRIBUTE, False)), getattr(view, ROLE_ATTRIBUTE, None)


def _load_user() -> Account | None:
    """The user of the request's live server-side session (`sessions.py`); a cookie whose
    session was ended, or went idle, signs nobody in and is cleared."""
    token = session.get(SESSION_TOKEN)
    if not isinstance(token, str):
        return None
    context = web_context()
    live = resolve_session(context.engine, token, context.settings.web.session_lifetime_s)
    account = None if live is None else get_account(context.engine, live[1])
    if live is None or account is None or not account.enabled:
        session.clear()
        return None
    return account


def _check_csrf() -> None:
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER) or ""
    if not isinstance(expected, str) or not hmac.compare_digest(expected.encode(), given.encode()):
        abort(400, description="expected the form's CSRF token, found none or a wrong one")


def _refuse_nul() -> None:
    """PostgreSQL cannot hold NUL in text: refuse it here with 400 rather than as a
    database error (500) in whichever view it reaches."""
    for source, values in (("query", request.args), ("form", request.form)):
        for name, value in values.items(multi=True):
            if "\x00" in name or "\x00" in value:
                abort(400, description=f"expected {source} fields without NUL, found one")
    if any("\x00" in str(v) for v in (request.view_args or {}).values()):
        abort(400, description="expected a path without NUL, found one")


def enforce() -> Response | None:
    """`before_request`: sign-in, role, then CSRF for POST."""
    endpoint = request.endpoint
    if endpoint is None:
        return None  # 404 or 405 follows
    _refuse_nul()
    is_public, role = view_policy(current_app, endpoint)
    g.user = _load_user()
    if not is_public:
        if g.user is None:
            if request.method == "GET":
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            abort(401)
        if role is None or not g.user.role.allows(role):
            abort(403)
    if request.method == "POST":
        _check_csrf()
    return None


def add_security_headers(response: Response) -> Response:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'",
    )
    if request.endpoint != "static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response
