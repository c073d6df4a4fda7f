"""API tokens of DICOMweb clients (admin only): create one (its secret is shown on the page
that answers the form, once, and never again), revoke one, see when each was last used."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from gateway.dicomweb.tokens import (
    Scope,
    TokenError,
    create_token,
    list_tokens,
    parse_scope,
    revoke_token,
)
from gateway.web.context import web_context
from gateway.web.security import client_address, current_user, requires_role
from gateway.web.users import Role

blueprint = Blueprint("api_tokens", __name__)


def _actor() -> str:
    user = current_user()
    assert user is not None
    return user.username


def _page(created: tuple[str, str] | None = None) -> str:
    context = web_context()
    settings = context.settings.dicomweb
    return render_template(
        "api_tokens.html",
        tokens=list_tokens(context.engine),
        scopes=[s.value for s in Scope],
        created=created,
        enabled=settings.enabled,
        basic=settings.allow_basic_auth,
    )


@blueprint.route("/api-tokens")
@requires_role(Role.ADMIN)
def index() -> str:
    return _page()


@blueprint.route("/api-tokens/new", methods=["POST"])
@requires_role(Role.ADMIN)
def new() -> str | Response:
    context = web_context()
    name = request.form.get("client_name", "")
    try:
        secret = create_token(
            context.engine,
            name,
            parse_scope(request.form.get("scope", "")),
            actor=_actor(),
            source_address=client_address(),
        )
    except TokenError as exc:
        flash(f"Not created: {exc}", "error")
        return redirect(url_for("api_tokens.index"))
    # Shown in this answer only (no redirect: a flashed secret would ride in the cookie).
    return _page(created=(name.strip(), secret))


@blueprint.route("/api-tokens/<int:token_id>/revoke", methods=["POST"])
@requires_role(Role.ADMIN)
def revoke(token_id: int) -> Response:
    context = web_context()
    try:
        name = revoke_token(
            context.engine, token_id, actor=_actor(), source_address=client_address()
        )
    except TokenError as exc:
        flash(f"Not revoked: {exc}", "error")
    else:
        flash(f"Token of {name} revoked: it signs nothing in from now on.", "info")
    return redirect(url_for("api_tokens.index"))
