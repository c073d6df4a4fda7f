"""Pull from the PACS: start a retrospective run (accession numbers, Study Instance UIDs or a
date range), a dry run that lists the studies and the rule that would take each, progress
per batch, and the priors jobs waited for (operator). The same as JSON under /api/pull/,
with the UI's session and CSRF token (X-CSRF-Token header). Runs are carried out by the
gateway's puller (`pacs-gateway serve`); a dry run asks the source while the page waits."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from pydantic import ValidationError
from sqlalchemy import select
from werkzeug.wrappers import Response

from gateway.models import JobPrior
from gateway.pull.criteria import PullCriteria
from gateway.pull.errors import PullingOff, SourceError
from gateway.pull.ledger import (
    batch_progress,
    create_run,
    describe_criteria,
    recent_runs,
    run_row,
    studies_of_run,
)
from gateway.pull.retrospective import PlannedStudy, dry_run
from gateway.web.context import web_context
from gateway.web.security import current_user, requires_role
from gateway.web.users import Role

blueprint = Blueprint("pull", __name__)


def _actor() -> str:
    user = current_user()
    assert user is not None
    return user.username


def _lines(text: str) -> list[str]:
    return [item.strip() for item in text.replace(",", "\n").splitlines() if item.strip()]


def _criteria_from_form() -> PullCriteria:
    form = request.form
    return PullCriteria(
        accession_numbers=_lines(form.get("accession_numbers", "")),
        study_instance_uids=_lines(form.get("study_instance_uids", "")),
        date_from=form.get("date_from") or None,
        date_to=form.get("date_to") or None,
        modality=form.get("modality") or None,
    )


def _problem(exc: ValidationError) -> str:
    return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())


def _recent_priors(limit: int = 20) -> list[Any]:
    with web_context().engine.connect() as connection:
        return list(
            connection.execute(select(JobPrior).order_by(JobPrior.id.desc()).limit(limit)).all()
        )


def _render_index(plan: list[PlannedStudy] | None = None, code: int = 200) -> tuple[str, int]:
    context = web_context()
    with context.engine.connect() as connection:
        runs = recent_runs(connection)
    return (
        render_template(
            "pull.html",
            source=context.settings.pull.source,
            runs=runs,
            priors=_recent_priors(),
            plan=plan,
            form=request.form,
            describe=describe_criteria,
        ),
        code,
    )


def _start(criteria: PullCriteria, batch_size: int | None) -> int:
    context = web_context()
    source = context.settings.pull.source
    if source is None:
        raise PullingOff("expected a source archive in the settings (pull.source), found none")
    return create_run(
        context.engine,
        criteria,
        transport=source.transport,
        batch_size=batch_size or context.settings.pull.batch_size,
        requested_by=_actor(),
    )


def _batch_size(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        size = 0
    if not 1 <= size <= 1000:
        raise ValueError(f"batch size: expected a number from 1 to 1000, found {value!r}")
    return size


@blueprint.route("/pull")
@requires_role(Role.OPERATOR)
def index() -> tuple[str, int]:
    return _render_index()


@blueprint.route("/pull/runs", methods=["POST"])
@requires_role(Role.OPERATOR)
def start() -> Any:
    try:
        run_id = _start(_criteria_from_form(), _batch_size(request.form.get("batch_size")))
    except ValidationError as exc:
        flash(f"Not started: {_problem(exc)}", "error")
        return _render_index(code=400)
    except (ValueError, PullingOff) as exc:
        flash(f"Not started: {exc}", "error")
        return _render_index(code=400)
    flash(f"Run {run_id} queued.", "info")
    return redirect(url_for("pull.run", run_id=run_id))


@blueprint.route("/pull/dry-run", methods=["POST"])
@requires_role(Role.OPERATOR)
def dry() -> tuple[str, int]:
    context = web_context()
    try:
        plan = dry_run(
            context.settings, context.engine, _criteria_from_form(), actor=_actor(), retry=False
        )
    except ValidationError as exc:
        flash(f"Dry run: {_problem(exc)}", "error")
        return _render_index(code=400)
    except PullingOff as exc:
        flash(f"Dry run: {exc}", "error")
        return _render_index(code=400)
    except SourceError as exc:
        flash(f"Dry run: the source archive did not answer: {exc.reason}", "error")
        return _render_index(code=502)
    return _render_index(plan=plan)


@blueprint.route("/pull/runs/<int:run_id>")
@requires_role(Role.OPERATOR)
def run(run_id: int) -> str:
    with web_context().engine.connect() as connection:
        row = run_row(connection, run_id)
        if row is None:
            abort(404, description=f"expected pull run {run_id}, found none")
        batches = batch_progress(connection, run_id)
        studies = studies_of_run(connection, run_id)
    return render_template(
        "pull_run.html",
        run=row,
        batches=batches,
        studies=studies,
        criteria=describe_criteria(row.criteria),
    )


# JSON API ------------------------------------------------------------------------------


def _run_json(row: Any, with_batches: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": row.id,
        "state": row.state,
        "criteria": describe_criteria(row.criteria),
        "transport": row.transport,
        "batch_size": row.batch_size,
        "studies": row.studies_total,
        "pulled": row.studies_pulled,
        "failed": row.studies_failed,
        "error": row.error,
        "requested_by": row.requested_by,
        "created_at": row.created_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }
    if with_batches:
        with web_context().engine.connect() as connection:
            data["batches"] = [
                {
                    "batch": b.batch,
                    "studies": b.studies,
                    "pulled": b.pulled,
                    "failed": b.failed,
                    "pending": b.pending,
                }
                for b in batch_progress(connection, row.id)
            ]
            data["study_list"] = [
                {
                    "study_instance_uid": s.study_instance_uid,
                    "batch": s.batch,
                    "state": s.state,
                    "instances": s.instances_listed,
                    "attempts": s.attempts,
                    "reason": s.reason,
                }
                for s in studies_of_run(connection, row.id)
            ]
    return data


def _json_error(message: str, code: int) -> tuple[Response, int]:
    return jsonify({"error": message}), code


def _criteria_from_json() -> tuple[PullCriteria, int | None]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object, found none")
    batch_size = _batch_size(body.pop("batch_size", None))
    return PullCriteria.model_validate(body), batch_size


@blueprint.route("/api/pull/runs")
@requires_role(Role.OPERATOR)
def api_runs() -> Response:
    with web_context().engine.connect() as connection:
        return jsonify({"runs": [_run_json(r) for r in recent_runs(connection, 100)]})


@blueprint.route("/api/pull/runs", methods=["POST"])
@requires_role(Role.OPERATOR)
def api_start() -> tuple[Response, int]:
    try:
        criteria, batch_size = _criteria_from_json()
        run_id = _start(criteria, batch_size)
    except ValidationError as exc:
        return _json_error(_problem(exc), 400)
    except (ValueError, PullingOff) as exc:
        return _json_error(str(exc), 400)
    with web_context().engine.connect() as connection:
        row = run_row(connection, run_id)
    return jsonify(_run_json(row, with_batches=True)), 202


@blueprint.route("/api/pull/runs/<int:run_id>")
@requires_role(Role.OPERATOR)
def api_run(run_id: int) -> Any:
    with web_context().engine.connect() as connection:
        row = run_row(connection, run_id)
    if row is None:
        return _json_error(f"expected pull run {run_id}, found none", 404)
    return jsonify(_run_json(row, with_batches=True))


@blueprint.route("/api/pull/dry-run", methods=["POST"])
@requires_role(Role.OPERATOR)
def api_dry_run() -> tuple[Response, int]:
    context = web_context()
    try:
        criteria, _ = _criteria_from_json()
        plan = dry_run(context.settings, context.engine, criteria, actor=_actor(), retry=False)
    except ValidationError as exc:
        return _json_error(_problem(exc), 400)
    except (ValueError, PullingOff) as exc:
        return _json_error(str(exc), 400)
    except SourceError as exc:
        return _json_error(f"the source archive did not answer: {exc.reason}", 502)
    return (
        jsonify(
            {
                "studies": [
                    {
                        "study_instance_uid": p.study.study_instance_uid,
                        "study_date": p.study.study_date,
                        "modalities": list(p.study.modalities),
                        "series": len(p.series),
                        "instances": p.study.instance_count,
                        "instances_held": p.instances_held,
                        "rule": p.rule,
                        "reason": p.reason,
                    }
                    for p in plan
                ]
            }
        ),
        200,
    )
