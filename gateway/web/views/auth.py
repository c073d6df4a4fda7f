"""Sign in and out."""

from __future__ import annotations

from urllib.parse import urlparse

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from gateway.audit import AuditKind, audit_row, record
from gateway.database import writer_queue
from gateway.web.context import web_context
from gateway.web.security import client_address, current_user, public, requires_role
from gateway.web.users import LoginResult, Role, authenticate

blueprint = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an absolute URL (an open redirect)."""
    if not target:
        return url_for("dashboard.index")
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("dashboard.index")
    return target


@blueprint.route("/login", methods=["GET", "POST"])
@public
def login() -> str | Response | tuple[str, int]:
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    context = web_context()
    result, account = authenticate(
        context.engine,
        context.settings.web,
        request.form.get("username", ""),
        request.form.get("password", ""),
        client_address(),
    )
    if result is LoginResult.BLOCKED:
        flash("Too many failed sign-ins: wait a few minutes and try again.", "error")
        return render_template("login.html", next=request.form.get("next", "")), 429
    if account is None:
        flash("Unknown username or wrong password.", "error")
        return render_template("login.html", next=request.form.get("next", "")), 401
    session.clear()  # a new session (and CSRF token) after signing in
    session.permanent = True
    session["user_id"] = account.id
    return redirect(_safe_next(request.form.get("next")))


@blueprint.route("/logout", methods=["POST"])
@requires_role(Role.VIEWER)
def logout() -> Response:
    user = current_user()
    context = web_context()
    if user is not None:
        with writer_queue(context.engine), context.engine.begin() as connection:
            record(
                connection,
                audit_row(
                    AuditKind.USER_LOGOUT, actor=user.username, source_address=client_address()
                ),
            )
    session.clear()
    return redirect(url_for("auth.login"))
