"""Destinations from the database (seeded from the settings): list (viewer and above), test
(operator and above), create, edit, enable/disable (admin)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from gateway.audit import AuditKind, Outcome, audit_row, record
from gateway.database import writer_queue
from gateway.delivery.registry import (
    SECRET_FIELDS,
    StoredDestination,
    destination_by_name,
    stored_destinations,
)
from gateway.results.forms import DEFAULT_FORMS
from gateway.web.context import web_context
from gateway.web.destination_check import CheckResult, check_destination
from gateway.web.destination_edits import (
    FORM_TITLES,
    KINDS,
    DestinationEditError,
    create_destination,
    form_config,
    set_enabled,
    stored_config,
    update_destination,
    validate_destination,
)
from gateway.web.security import client_address, current_user, requires_role
from gateway.web.users import Role

blueprint = Blueprint("destinations", __name__)


def _actor() -> str:
    user = current_user()
    assert user is not None
    return user.username


def _all() -> list[StoredDestination]:
    context = web_context()
    with context.engine.connect() as connection:
        return stored_destinations(connection)


def _by_id(destination_id: int) -> StoredDestination:
    for stored in _all():
        if stored.id == destination_id:
            return stored
    abort(404, description=f"expected destination {destination_id}, found none")


def _list(results: dict[str, CheckResult], code: int = 200) -> tuple[str, int]:
    return render_template("destinations.html", destinations=_all(), results=results), code


@blueprint.route("/destinations")
@requires_role(Role.VIEWER)
def index() -> tuple[str, int]:
    return _list({})


def _shown(config: dict[str, Any]) -> dict[str, Any]:
    """Form values without secrets: only whether one is stored."""
    shown = {k: v for k, v in config.items() if k not in SECRET_FIELDS}
    shown.setdefault("forms", [f.value for f in DEFAULT_FORMS])  # rows saved before forms
    tls = config.get("tls") or {}
    shown.update(
        {
            "tls_ca_file": tls.get("ca_file"),
            "tls_cert_file": tls.get("cert_file"),
            "tls_key_file": tls.get("key_file"),
            "tls_check_hostname": tls.get("check_hostname", True),
        }
    )
    for field in SECRET_FIELDS:
        shown[f"{field}_stored"] = config.get(field) is not None
    return shown


def _submitted(stored: dict[str, Any] | None) -> dict[str, Any]:
    """The submitted form again (secrets left out), to show it with the error."""
    form = request.form
    shown: dict[str, Any] = {
        k: v for k, v in form.items() if k not in SECRET_FIELDS and k != "csrf_token"
    }
    shown["enabled"] = form.get("enabled") == "on"
    shown["tls_check_hostname"] = form.get("tls_check_hostname") == "on"
    shown["forms"] = form.getlist("forms")
    for field in SECRET_FIELDS:
        shown[f"{field}_stored"] = bool(stored and stored.get(field) is not None)
    return shown


def _form(values: dict[str, Any], destination_id: int | None, code: int = 200) -> tuple[str, int]:
    return (
        render_template(
            "destination_form.html",
            d=values,
            destination_id=destination_id,
            kinds=KINDS,
            forms=FORM_TITLES,
        ),
        code,
    )


@blueprint.route("/destinations/new", methods=["GET", "POST"])
@requires_role(Role.ADMIN)
def new() -> Any:
    context = web_context()
    if request.method == "GET":
        defaults = {"kind": "dicom", "enabled": True, "tls_check_hostname": True}
        return _form({**defaults, "forms": [f.value for f in DEFAULT_FORMS]}, None)
    name = request.form.get("name", "").strip()
    kind = request.form.get("kind", "")
    try:
        destination = validate_destination(name, kind, form_config(kind, request.form))
        create_destination(
            context.engine,
            destination,
            enabled=request.form.get("enabled") == "on",
            actor=_actor(),
            address=client_address(),
        )
    except DestinationEditError as exc:
        flash(f"Not saved: {exc}", "error")
        return _form(_submitted(None), None, 400)
    flash(f"Destination {name} created.", "info")
    return redirect(url_for("destinations.index"))


@blueprint.route("/destinations/<int:destination_id>/edit", methods=["GET", "POST"])
@requires_role(Role.ADMIN)
def edit(destination_id: int) -> Any:
    context = web_context()
    stored = _by_id(destination_id)
    config = stored_config(context.engine, destination_id) or {}
    if request.method == "GET":
        values = {"name": stored.name, "kind": stored.kind, **_shown(config)}
        return _form(values, destination_id)
    try:
        destination = validate_destination(
            stored.name, stored.kind, form_config(stored.kind, request.form, config)
        )
        changed = update_destination(
            context.engine, destination_id, destination, actor=_actor(), address=client_address()
        )
    except DestinationEditError as exc:
        flash(f"Not saved: {exc}", "error")
        values = {**_submitted(config), "name": stored.name, "kind": stored.kind}
        return _form(values, destination_id, 400)
    flash(f"Destination {stored.name} {'saved' if changed else 'unchanged'}.", "info")
    return redirect(url_for("destinations.index"))


@blueprint.route("/destinations/<int:destination_id>/enabled", methods=["POST"])
@requires_role(Role.ADMIN)
def toggle(destination_id: int) -> Response:
    _by_id(destination_id)
    enabled = request.form.get("enabled") == "true"
    name = set_enabled(
        web_context().engine, destination_id, enabled, actor=_actor(), address=client_address()
    )
    flash(f"Destination {name} {'enabled' if enabled else 'disabled'}.", "info")
    return redirect(url_for("destinations.index"))


@blueprint.route("/destinations/<name>/test", methods=["POST"])
@requires_role(Role.OPERATOR)
def test(name: str) -> tuple[str, int]:
    context = web_context()
    with context.engine.connect() as connection:
        stored = destination_by_name(connection, name)
    if stored is None:
        abort(404, description=f"expected a destination {name!r}, found none")
    if stored.destination is None:
        flash(f"Not tested: {stored.problem}", "error")
        return _list({}, 400)
    destination = stored.destination
    result: CheckResult = check_destination(destination, context.settings)
    with writer_queue(context.engine), context.engine.begin() as connection:
        record(
            connection,
            audit_row(
                AuditKind.DESTINATION_TESTED,
                Outcome.SUCCESS if result.ok else Outcome.FAILURE,
                actor=_actor(),
                source_address=client_address(),
                detail={
                    "destination": name,
                    "kind": destination.kind,
                    "message": result.message,
                    "seconds": round(result.seconds, 3),
                },
            ),
        )
    return _list({name: result})
