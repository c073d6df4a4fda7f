"""Destinations, read-only from the settings, with a test button (operator and above)."""

from __future__ import annotations

from flask import Blueprint, abort, render_template
from werkzeug.wrappers import Response

from gateway.audit import AuditKind, Outcome, audit_row, record
from gateway.database import writer_queue
from gateway.web.context import web_context
from gateway.web.destination_check import CheckResult, check_destination
from gateway.web.security import client_address, current_user, requires_role
from gateway.web.users import Role

blueprint = Blueprint("destinations", __name__)


@blueprint.route("/destinations")
@requires_role(Role.VIEWER)
def index() -> str:
    return render_template(
        "destinations.html", destinations=web_context().settings.destinations, results={}
    )


@blueprint.route("/destinations/<name>/test", methods=["POST"])
@requires_role(Role.OPERATOR)
def test(name: str) -> str | Response:
    context = web_context()
    try:
        destination = context.settings.destination(name)
    except KeyError:
        abort(404, description=f"expected a configured destination {name!r}, found none")
    result: CheckResult = check_destination(destination, context.settings)
    user = current_user()
    assert user is not None
    with writer_queue(context.engine), context.engine.begin() as connection:
        record(
            connection,
            audit_row(
                AuditKind.DESTINATION_TESTED,
                Outcome.SUCCESS if result.ok else Outcome.FAILURE,
                actor=user.username,
                source_address=client_address(),
                detail={
                    "destination": name,
                    "kind": destination.kind,
                    "message": result.message,
                    "seconds": round(result.seconds, 3),
                },
            ),
        )
    return render_template(
        "destinations.html", destinations=context.settings.destinations, results={name: result}
    )
