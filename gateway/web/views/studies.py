"""Studies: a searchable list, one study's page (series, jobs with their stages, deliveries,
findings, preview), and the operator's retry and cancel."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask import Response as FlaskResponse
from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from gateway.audit import AuditKind, audit_row, record
from gateway.database import writer_queue
from gateway.jobs.control import JobActionRefused, cancel_job, retry_job
from gateway.models import Delivery, Job, Series, Study, StudyState
from gateway.web.context import web_context
from gateway.web.identity import patient_identity
from gateway.web.paging import page_count, page_from
from gateway.web.preview import NoPreview, findings_path, render_preview
from gateway.web.security import client_address, current_user, requires_role
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


@blueprint.route("/studies")
@requires_role(Role.VIEWER)
def index() -> str:
    context = web_context()
    size = context.settings.web.page_size
    uid = request.args.get("uid", "").strip()
    modality = request.args.get("modality", "").strip()
    state = request.args.get("state", "").strip()
    query = select(Study)
    if uid:
        query = query.where(Study.study_instance_uid.startswith(uid, autoescape=True))
    if modality:
        query = query.where(
            exists().where(
                Series.study_id == Study.id, func.upper(Series.modality) == modality.upper()
            )
        )
    if state in {s.value for s in StudyState}:
        query = query.where(Study.state == StudyState(state))
    with Session(context.engine) as connection:
        total = connection.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        page = page_from(request.args, total, size)
        studies = (
            connection.execute(
                query.order_by(Study.last_received_at.desc(), Study.id.desc())
                .limit(size)
                .offset((page - 1) * size)
            )
            .scalars()
            .all()
        )
        ids = [s.id for s in studies]
        latest: dict[int, str] = {}
        modalities: dict[int, set[str]] = {}
        if ids:
            for study_id, job_state in connection.execute(
                select(Job.study_id, Job.state).where(Job.study_id.in_(ids)).order_by(Job.id)
            ):
                latest[study_id] = job_state.value
            for study_id, series_modality in connection.execute(
                select(Series.study_id, Series.modality).where(Series.study_id.in_(ids))
            ):
                if series_modality:
                    modalities.setdefault(study_id, set()).add(series_modality)
    return render_template(
        "studies.html",
        studies=studies,
        latest=latest,
        modalities=modalities,
        total=total,
        page=page,
        pages=page_count(total, size),
        filters={"uid": uid, "modality": modality, "state": state},
        states=[s.value for s in StudyState],
    )


def _timeline(job: Job) -> list[tuple[str, Any]]:
    return [(label, getattr(job, field)) for label, field in TIMELINE if getattr(job, field)]


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
        series=series,
        jobs=jobs,
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
