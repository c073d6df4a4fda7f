"""Studies: a searchable list (gateway/web/study_search.py, study_rows.py), one study's page
(series, jobs with their stages, deliveries, findings, preview), and the operator's retry
and cancel, of one job or in bulk (gateway/web/bulk_retry.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask import Response as FlaskResponse
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from gateway.audit import AuditKind, audit_row, record
from gateway.completion.signals import mpps_waiting_reason
from gateway.database import writer_queue
from gateway.jobs.control import JobActionRefused, cancel_job, retry_job
from gateway.models import (
    Delivery,
    Job,
    JobPrior,
    JobState,
    RoutingRule,
    Series,
    Study,
    StudyState,
)
from gateway.patient_index import PatientIndex
from gateway.pipelines.registry import PipelineRegistry
from gateway.web.bulk_retry import LIMIT as BULK_RETRY_LIMIT
from gateway.web.bulk_retry import (
    FailedJob,
    failed_jobs,
    parse_criteria,
    parse_job_ids,
    retry_confirmed,
)
from gateway.web.context import WebContext, web_context
from gateway.web.findings_match import Verdict
from gateway.web.identity import patient_identity
from gateway.web.paging import page_count, page_from
from gateway.web.preview import NoPreview, findings_path, render_preview
from gateway.web.security import client_address, current_user, requires_role
from gateway.web.study_rows import classification_thresholds, format_duration, study_lines
from gateway.web.study_search import (
    IDENTIFIER_LABELS,
    StudySearch,
    job_conditions,
    parse_search,
    studies_query,
)
from gateway.web.users import Role

blueprint = Blueprint("studies", __name__)

TIMELINE = (
    ("created", "created_at"),
    ("sent to queue", "enqueued_at"),
    ("started", "started_at"),
    ("inferred", "inferred_at"),
    ("results built", "results_built_at"),
    ("delivered", "delivered_at"),
    ("finished", "finished_at"),
)


def _search_choices(
    context: WebContext, registry: PipelineRegistry, search: StudySearch
) -> dict[str, list[str]]:
    """The options of the form's lists; a value asked for is kept even if no longer one."""
    with context.engine.connect() as connection:
        rules = list(
            connection.execute(select(RoutingRule.name).order_by(RoutingRule.name)).scalars()
        )
    pipelines = registry.names
    return {
        "rules": sorted({*rules, *([search.rule] if search.rule else [])}),
        "pipelines": sorted({*pipelines, *([search.pipeline] if search.pipeline else [])}),
        "states": [s.value for s in StudyState],
        "job_states": [s.value for s in JobState],
        "verdicts": [v.value for v in Verdict],
    }


@blueprint.route("/studies", methods=["GET", "POST"])
@requires_role(Role.VIEWER)
def index() -> Response | tuple[str, int]:
    """GET: the list for the search in the URL. POST: the search form, whose Accession
    Number and Patient ID are hashed here so that only their hashes reach a URL."""
    context = web_context()
    user = current_user()
    assert user is not None
    may_identify = user.role.allows(Role.OPERATOR)
    posted = request.method == "POST"
    if posted:
        parsed = parse_search(request.form, PatientIndex.from_settings(context.settings))
    else:
        parsed = parse_search(request.args)
    search = parsed.search
    if search.by_identifier and not may_identify:
        abort(
            403,
            description="expected an operator or admin to search by Accession Number or "
            f"Patient ID, found a {user.role.value}",
        )
    if posted and not parsed.problems:
        target: dict[str, Any] = search.query_args()
        return redirect(url_for("studies.index", **target), 303)
    if search.by_identifier and not parsed.problems:
        _audit_identifier_search(context.engine, user.username, search)
    size = context.settings.web.page_size
    registry = context.settings.pipeline_registry()
    total, page, lines = 0, 1, []
    if not parsed.problems:
        dialect = context.engine.dialect.name
        thresholds = classification_thresholds(registry)
        query = studies_query(search, dialect, thresholds)
        with Session(context.engine) as session:
            total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
            page = page_from(request.args, total, size)
            studies = (
                session.execute(
                    query.order_by(Study.last_received_at.desc(), Study.id.desc())
                    .limit(size)
                    .offset((page - 1) * size)
                )
                .scalars()
                .all()
            )
            lines = study_lines(
                session, studies, thresholds, job_conditions(search, dialect, thresholds)
            )
    # What the form shows: as typed when something was wrong, else the search as read.
    form = (
        dict(request.form if posted else request.args) if parsed.problems else search.query_args()
    )
    page_html = render_template(
        "studies.html",
        lines=lines,
        total=total,
        page=page,
        pages=page_count(total, size),
        search=search,
        form=form,
        problems=parsed.problems,
        may_identify=may_identify,
        identifier_labels=IDENTIFIER_LABELS,
        duration=format_duration,
        **_search_choices(context, registry, search),
    )
    return page_html, 400 if parsed.problems else 200


def _audit_identifier_search(engine: Engine, username: str, search: StudySearch) -> None:
    """Who looked studies up by Accession Number or Patient ID, and by which: the fields
    only, neither the values nor their hashes (a hash links the patient's studies)."""
    fields = [
        label
        for name, label in IDENTIFIER_LABELS.items()
        if getattr(search, name)  # accession_hash, patient_hash
    ]
    with writer_queue(engine), engine.begin() as connection:
        record(
            connection,
            audit_row(
                AuditKind.STUDIES_SEARCHED_BY_IDENTIFIER,
                actor=username,
                source_address=client_address(),
                detail={"fields": fields},
            ),
        )


def _timeline(job: Job) -> list[tuple[str, Any]]:
    return [(label, getattr(job, field)) for label, field in TIMELINE if getattr(job, field)]


def _job_priors(connection: Session, job_ids: list[int]) -> tuple[dict[int, JobPrior], set[str]]:
    """Per job that asked for a prior, its `job_priors` row; and which of the priors found
    the gateway holds (their study pages can be linked)."""
    if not job_ids:
        return {}, set()
    rows = connection.execute(select(JobPrior).where(JobPrior.job_id.in_(job_ids))).scalars()
    priors = {row.job_id: row for row in rows}
    found = {p.prior_study_instance_uid for p in priors.values() if p.prior_study_instance_uid}
    held: set[str] = set()
    if found:
        held = set(
            connection.execute(
                select(Study.study_instance_uid).where(Study.study_instance_uid.in_(found))
            ).scalars()
        )
    return priors, held


@blueprint.route("/studies/<uid>")
@requires_role(Role.VIEWER)
def detail(uid: str) -> str:
    context = web_context()
    with Session(context.engine) as connection:
        study = connection.execute(
            select(Study).where(Study.study_instance_uid == uid)
        ).scalar_one_or_none()
        if study is None:
            abort(404, description="expected a stored study with this UID, found none")
        series = (
            connection.execute(
                select(Series)
                .where(Series.study_id == study.id)
                .order_by(Series.series_number.is_(None), Series.series_number)
            )
            .scalars()
            .all()
        )
        jobs = (
            connection.execute(select(Job).where(Job.study_id == study.id).order_by(Job.id.desc()))
            .scalars()
            .all()
        )
        priors, held_priors = _job_priors(connection, [j.id for j in jobs])
        completion_wait = mpps_waiting_reason(connection.connection(), uid)
        deliveries = (
            connection.execute(
                select(Delivery)
                .where(Delivery.study_instance_uid == uid)
                .order_by(Delivery.destination, Delivery.kind)
            )
            .scalars()
            .all()
        )
    by_destination: dict[str, list[Delivery]] = {}
    for delivery in deliveries:
        by_destination.setdefault(delivery.destination, []).append(delivery)
    user = current_user()
    identity = None
    if user is not None and user.role.allows(Role.OPERATOR):
        identity = patient_identity(context.settings, context.engine, uid)
        with writer_queue(context.engine), context.engine.begin() as connection:
            record(
                connection,
                audit_row(
                    AuditKind.PATIENT_IDENTITY_VIEWED,
                    actor=user.username,
                    source_address=client_address(),
                    study_instance_uid=uid,
                ),
            )
    previews = {j.id for j in jobs if findings_path(context.settings, j.id).is_file()}
    hold_until = None
    if study.series_held_at is not None:  # the router fails the job after this
        hold_s = context.settings.routing.series_completeness.hold_s
        hold_until = study.series_held_at + timedelta(seconds=hold_s)
    return render_template(
        "study.html",
        study=study,
        hold_until=hold_until,
        completion_wait=completion_wait,
        series=series,
        jobs=jobs,
        priors=priors,
        held_priors=held_priors,
        timelines={j.id: _timeline(j) for j in jobs},
        by_destination=by_destination,
        identity=identity,
        previews=previews,
        can_operate=user is not None and user.role.allows(Role.OPERATOR),
    )


@blueprint.route("/jobs/<int:job_id>/preview.png")
@requires_role(Role.VIEWER)
def preview(job_id: int) -> Response:
    context = web_context()
    try:
        png = render_preview(context.settings, context.engine, job_id)
    except NoPreview as exc:
        abort(404, description=str(exc))
    return FlaskResponse(png, mimetype="image/png", headers={"Cache-Control": "private, no-store"})


def _job_action(job_id: int, action: str) -> Response:
    context = web_context()
    user = current_user()
    assert user is not None
    with context.engine.connect() as connection:
        study_uid = connection.execute(
            select(Job.study_instance_uid).where(Job.id == job_id)
        ).scalar()
    if study_uid is None:
        abort(404, description=f"expected job {job_id}, found none")
    try:
        (retry_job if action == "retry" else cancel_job)(context.engine, job_id, user.username)
    except JobActionRefused as exc:
        flash(str(exc), "error")
    else:
        flash(f"Job {job_id}: {action} done.", "info")
    return redirect(url_for("studies.detail", uid=study_uid))


@blueprint.route("/jobs/<int:job_id>/retry", methods=["POST"])
@requires_role(Role.OPERATOR)
def retry(job_id: int) -> Response:
    return _job_action(job_id, "retry")


@blueprint.route("/jobs/<int:job_id>/cancel", methods=["POST"])
@requires_role(Role.OPERATOR)
def cancel(job_id: int) -> Response:
    return _job_action(job_id, "cancel")


@blueprint.route("/jobs/bulk-retry")
@requires_role(Role.OPERATOR)
def bulk_retry_form() -> tuple[str, int]:
    """Step one: the criteria, and how many failed jobs they match (with the list)."""
    context = web_context()
    parsed = parse_criteria(request.args)
    total, jobs = 0, list[FailedJob]()
    if not parsed.problems and not parsed.criteria.empty:
        with context.engine.connect() as connection:
            total, jobs = failed_jobs(connection, parsed.criteria)
    with context.engine.connect() as connection:
        rules = list(
            connection.execute(select(RoutingRule.name).order_by(RoutingRule.name)).scalars()
        )
    page = render_template(
        "bulk_retry.html",
        criteria=parsed.criteria,
        form=request.args,
        problems=parsed.problems,
        total=total,
        jobs=jobs,
        rules=rules,
        limit=BULK_RETRY_LIMIT,
    )
    return page, 400 if parsed.problems else 200


@blueprint.route("/jobs/bulk-retry", methods=["POST"])
@requires_role(Role.OPERATOR)
def bulk_retry_confirm() -> Response:
    """Step two: retry the confirmed jobs that still match and are still failed."""
    context = web_context()
    user = current_user()
    assert user is not None
    parsed = parse_criteria(request.form)
    if parsed.problems or parsed.criteria.empty:
        abort(
            400,
            description="; ".join(parsed.problems)
            or "expected a rule or a received time range, found neither",
        )
    outcome = retry_confirmed(
        context.engine,
        parsed.criteria,
        parse_job_ids(request.form.get("job_ids", "")),
        user.username,
    )
    flash(f"Retried {len(outcome.retried)} failed job(s).", "info")
    if outcome.skipped:
        flash(
            f"{len(outcome.skipped)} confirmed job(s) no longer failed or no longer matching: "
            "not retried.",
            "error",
        )
    for reason in outcome.refused.values():
        flash(f"Not retried: {reason}", "error")
    target: dict[str, Any] = parsed.criteria.query_args()
    return redirect(url_for("studies.bulk_retry_form", **target))
