"""Sign in and out. Signing out ends every session of the user (every browser), so a copied
cookie of any of them stops working too."""

from __future__ import annotations

from urllib.parse import urlparse

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

from gateway.audit import AuditKind, audit_row, record
from gateway.database import writer_queue
from gateway.web.context import web_context
from gateway.web.security import (
    SESSION_TOKEN,
    client_address,
    client_user_agent,
    current_user,
    public,
    requires_role,
)
from gateway.web.sessions import EndReason, end_user_sessions, start_session
from gateway.web.trusted_browser import COOKIE, trust_browser, trusted_browser
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
    web = context.settings.web
    secret = str(current_app.config["SECRET_KEY"])
    username = request.form.get("username", "").strip()[:64]
    result, account = authenticate(
        context.engine,
        web,
        username,
        request.form.get("password", ""),
        client_address(),
        trusted_browser(request.cookies.get(COOKIE), secret, web, username),
    )
    if result is LoginResult.BLOCKED:
        flash("Too many failed sign-ins: wait a few minutes and try again.", "error")
        return render_template("login.html", next=request.form.get("next", "")), 429
    if account is None:
        flash("Unknown username or wrong password.", "error")
        return render_template("login.html", next=request.form.get("next", "")), 401
    token = start_session(context.engine, account.id, client_address(), client_user_agent())
    session.clear()  # a new session (and CSRF token) after signing in
    session.permanent = True
    session[SESSION_TOKEN] = token
    response = redirect(_safe_next(request.form.get("next")))
    trust_browser(response, secret, web, account.username)
    return response


@blueprint.route("/logout", methods=["POST"])
@requires_role(Role.VIEWER)
def logout() -> Response:
    user = current_user()
    context = web_context()
    if user is not None:
        with writer_queue(context.engine), context.engine.begin() as connection:
            ended = end_user_sessions(connection, user.id, EndReason.LOGOUT)
            record(
                connection,
                audit_row(
                    AuditKind.USER_LOGOUT,
                    actor=user.username,
                    source_address=client_address(),
                    detail={"sessions_ended": ended},
                ),
            )
    session.clear()
    return redirect(url_for("auth.login"))
