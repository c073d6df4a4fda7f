"""Users (admin only): create, disable or enable, change role, set a new password; see the
live web sessions and end any of them."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from gateway.audit import AuditKind, audit_row, record
from gateway.database import writer_queue
from gateway.web.context import web_context
from gateway.web.security import client_address, current_user, requires_role
from gateway.web.sessions import EndReason, end_session, list_active_sessions
from gateway.web.users import Role, UserError, create_user, list_accounts, update_user

blueprint = Blueprint("users", __name__)


def _actor() -> str:
    user = current_user()
    assert user is not None
    return user.username


@blueprint.route("/users")
@requires_role(Role.ADMIN)
def index() -> str:
    context = web_context()
    return render_template(
        "users.html",
        accounts=list_accounts(context.engine),
        roles=[r.value for r in Role],
        sessions=list_active_sessions(context.engine, context.settings.web.session_lifetime_s),
    )


def _role(value: str | None) -> Role | None:
    try:
        return Role(value) if value else None
    except ValueError:
        raise UserError(f"expected a role in {[r.value for r in Role]}, found {value!r}") from None


@blueprint.route("/users/new", methods=["POST"])
@requires_role(Role.ADMIN)
def new() -> Response:
    context = web_context()
    username = request.form.get("username", "").strip()
    try:
        role = _role(request.form.get("role")) or Role.VIEWER
        create_user(
            context.engine,
            context.settings.web,
            username,
            request.form.get("password", ""),
            role,
            actor=_actor(),
            source_address=client_address(),
        )
    except UserError as exc:
        flash(f"Not created: {exc}", "error")
    else:
        flash(f"User {username} created as {role.value}.", "info")
    return redirect(url_for("users.index"))


@blueprint.route("/users/<int:user_id>", methods=["POST"])
@requires_role(Role.ADMIN)
def change(user_id: int) -> Response:
    context = web_context()
    enabled_field = request.form.get("enabled")
    try:
        update_user(
            context.engine,
            context.settings.web,
            user_id,
            actor=_actor(),
            role=_role(request.form.get("role")),
            enabled=None if enabled_field is None else enabled_field == "true",
            password=request.form.get("password") or None,
            source_address=client_address(),
        )
    except UserError as exc:
        flash(f"Not changed: {exc}", "error")
    else:
        flash("User changed.", "info")
    return redirect(url_for("users.index"))


@blueprint.route("/users/sessions/<int:session_id>/end", methods=["POST"])
@requires_role(Role.ADMIN)
def end(session_id: int) -> Response:
    context = web_context()
    with writer_queue(context.engine), context.engine.begin() as connection:
        ended = end_session(connection, session_id, EndReason.ADMIN)
        if ended is not None:
            record(
                connection,
                audit_row(
                    AuditKind.USER_SESSION_ENDED,
                    actor=_actor(),
                    source_address=client_address(),
                    detail={"user": ended[1], "session": session_id},
                ),
            )
    if ended is None:
        flash(f"Not ended: expected a live session {session_id}, found none.", "error")
    else:
        flash(f"Session {session_id} of {ended[1]} ended.", "info")
    return redirect(url_for("users.index"))
