"""Users (admin only): create, disable or enable, change role, set a new password."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from gateway.web.context import web_context
from gateway.web.security import client_address, current_user, requires_role
from gateway.web.users import Role, UserError, create_user, list_accounts, update_user

blueprint = Blueprint("users", __name__)


def _actor() -> str:
    user = current_user()
    assert user is not None
    return user.username


@blueprint.route("/users")
@requires_role(Role.ADMIN)
def index() -> str:
    return render_template(
        "users.html", accounts=list_accounts(web_context().engine), roles=[r.value for r in Role]
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
