"""The audit log, read-only: filter by time, kind, actor and study; export as CSV. There is
no route that edits or deletes an event (and the database refuses it anyway)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, render_template, request
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from gateway.audit import AuditKind
from gateway.models import AuditEvent
from gateway.web.context import web_context
from gateway.web.paging import page_count, page_from
from gateway.web.security import requires_role
from gateway.web.users import Role

blueprint = Blueprint("audit", __name__)

CSV_COLUMNS = (
    "id",
    "occurred_at",
    "kind",
    "outcome",
    "actor",
    "source_address",
    "study_instance_uid",
    "sop_instance_uid",
    "detail",
)
CSV_LIMIT = 100_000


def _when(name: str) -> datetime | None:
    value = request.args.get(name, "").strip()
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _filters() -> tuple[dict[str, str], Select[Any]]:
    args = {
        k: request.args.get(k, "").strip() for k in ("since", "until", "kind", "actor", "study")
    }
    query = select(AuditEvent)
    since, until = _when("since"), _when("until")
    if since is not None:
        query = query.where(AuditEvent.occurred_at >= since)
    if until is not None:
        query = query.where(AuditEvent.occurred_at <= until)
    if args["kind"]:
        query = query.where(AuditEvent.kind == args["kind"])
    if args["actor"]:
        query = query.where(AuditEvent.actor == args["actor"])
    if args["study"]:
        query = query.where(
            AuditEvent.study_instance_uid.startswith(args["study"], autoescape=True)
        )
    return args, query


@blueprint.route("/audit")
@requires_role(Role.VIEWER)
def index() -> str:
    context = web_context()
    size = context.settings.web.page_size
    args, query = _filters()
    with Session(context.engine) as connection:
        total = connection.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        page = page_from(request.args, total, size)
        events = (
            connection.execute(
                query.order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
                .limit(size)
                .offset((page - 1) * size)
            )
            .scalars()
            .all()
        )
        kinds = sorted(
            set(connection.execute(select(AuditEvent.kind).distinct()).scalars())
            | {k.value for k in AuditKind}
        )
    return render_template(
        "audit.html",
        events=events,
        filters=args,
        kinds=kinds,
        total=total,
        page=page,
        pages=page_count(total, size),
        query_string={k: v for k, v in args.items() if v},
    )


def _cell(value: object) -> str:
    """A CSV cell that a spreadsheet will not run as a formula."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    elif isinstance(value, dict | list):
        value = json.dumps(value, sort_keys=True)
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@blueprint.route("/audit.csv")
@requires_role(Role.VIEWER)
def export_csv() -> Response:
    context = web_context()
    _, query = _filters()

    def rows() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(CSV_COLUMNS)
        with Session(context.engine) as connection:
            result = connection.execute(
                query.order_by(AuditEvent.occurred_at, AuditEvent.id).limit(CSV_LIMIT)
            ).scalars()
            for event in result:
                writer.writerow([_cell(getattr(event, c)) for c in CSV_COLUMNS])
                if buffer.tell() > 65536:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

    return Response(
        rows(),
        mimetype="text/csv",
        headers={"Content-Disposition": "attachment; filename=audit-events.csv"},
    )
