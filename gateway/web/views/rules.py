"""Routing rules: list, create, edit, enable/disable, reorder (admin); test one against a
stored study with the explanation of every condition (viewer and above)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from gateway.delivery.registry import destination_names
from gateway.routing.config import Priority, PriorRequirement
from gateway.routing.rules import RuleEvaluation, StudyNotFound, evaluate_rule
from gateway.routing.seed import InvalidStoredRule, StoredRule, load_rules
from gateway.web.context import web_context
from gateway.web.rule_edits import (
    RuleEditError,
    create_rule,
    format_conditions,
    move_rule,
    parse_conditions,
    parse_prior,
    set_enabled,
    update_rule,
    validate_rule,
)
from gateway.web.security import client_address, current_user, requires_role
from gateway.web.users import Role

blueprint = Blueprint("rules", __name__)


def _rules() -> list[StoredRule]:
    context = web_context()
    with context.engine.connect() as connection:
        return load_rules(connection)


def _rule(rule_id: int) -> StoredRule:
    for rule in _rules():
        if rule.id == rule_id:
            return rule
    abort(404, description=f"expected rule {rule_id}, found none")


def _destination_names() -> list[str]:
    """Every destination of the database, disabled ones included."""
    context = web_context()
    with context.engine.connect() as connection:
        return destination_names(connection, include_disabled=True)


def _pipeline_names() -> list[str]:
    """The registered pipelines: what a rule may name."""
    return web_context().settings.pipeline_registry().names


def _actor() -> str:
    user = current_user()
    assert user is not None
    return user.username


@blueprint.route("/rules")
@requires_role(Role.VIEWER)
def index() -> str:
    try:
        rules = _rules()
        problem = None
    except InvalidStoredRule as exc:
        rules, problem = [], str(exc)
    return render_template("rules.html", rules=rules, problem=problem)


def _form_data(name: str) -> dict[str, Any]:
    form = request.form
    destinations = form.getlist("destinations")
    return {
        "name": name,
        "enabled": form.get("enabled") == "on",
        "priority": form.get("priority", Priority.ROUTINE.value),
        "pipeline": form.get("pipeline", ""),
        "destinations": destinations or None,
        "rerun_on_update": form.get("rerun_on_update") == "on",
        "trigger": form.get("trigger", "study"),
        "series_quiet_period_s": form.get("series_quiet_period_s", "").strip() or None,
        "quiet_period_s": form.get("quiet_period_s", "").strip() or None,
        "conditions": parse_conditions(form.get("conditions", "")),
        "prior": parse_prior(
            form.get("prior_within_years", ""),
            form.get("prior_same_body_part") == "on",
            form.get("prior_wait_s", ""),
        ),
    }


def _prior_fields(prior: PriorRequirement | None) -> dict[str, Any]:
    """The editor's prior fields: blank numbers when the rule asks for no prior."""
    if prior is None:
        return {"within_years": "", "same_body_part": True, "wait_s": ""}
    return {
        "within_years": f"{prior.within_years:g}",
        "same_body_part": prior.same_body_part,
        "wait_s": f"{prior.wait_s:g}",
    }


def _submitted_prior() -> dict[str, Any]:
    """The prior fields as submitted, to show them with the error."""
    form = request.form
    return {
        "within_years": form.get("prior_within_years", ""),
        "same_body_part": form.get("prior_same_body_part") == "on",
        "wait_s": form.get("prior_wait_s", ""),
    }


def _submitted(name: str) -> dict[str, Any]:
    """The submitted form again, to show it with the error."""
    form = request.form
    return {
        "name": name,
        "enabled": form.get("enabled") == "on",
        "priority": form.get("priority", ""),
        "pipeline": form.get("pipeline", ""),
        "destinations": form.getlist("destinations") or None,
        "rerun_on_update": form.get("rerun_on_update") == "on",
        "trigger": form.get("trigger", "study"),
        "series_quiet_period_s": form.get("series_quiet_period_s", ""),
        "quiet_period_s": form.get("quiet_period_s", ""),
    }


def _render_form(
    rule: dict[str, Any],
    conditions: str,
    prior: dict[str, Any],
    rule_id: int | None,
    code: int = 200,
) -> tuple[str, int]:
    return (
        render_template(
            "rule_form.html",
            rule=rule,
            conditions=conditions,
            prior=prior,
            rule_id=rule_id,
            destination_names=_destination_names(),
            pipelines=_pipeline_names(),
            priorities=[p.value for p in Priority],
        ),
        code,
    )


@blueprint.route("/rules/new", methods=["GET", "POST"])
@requires_role(Role.ADMIN)
def new() -> Any:
    context = web_context()
    if request.method == "GET":
        return _render_form(
            {
                "name": "",
                "enabled": True,
                "priority": "routine",
                "pipeline": "lung_nodules" if "lung_nodules" in _pipeline_names() else "",
                "destinations": None,
                "rerun_on_update": False,
            },
            "modality equals CT",
            _prior_fields(None),
            None,
        )
    name = request.form.get("name", "").strip()
    try:
        data = _form_data(name)
        rule = validate_rule(data, _destination_names(), _pipeline_names())
        create_rule(context.engine, rule, actor=_actor(), address=client_address())
    except RuleEditError as exc:
        flash(f"Not saved: {exc}", "error")
        form = _submitted(name)
        return _render_form(form, request.form.get("conditions", ""), _submitted_prior(), None, 400)
    flash(f"Rule {rule.name} created.", "info")
    return redirect(url_for("rules.index"))


@blueprint.route("/rules/<int:rule_id>/edit", methods=["GET", "POST"])
@requires_role(Role.ADMIN)
def edit(rule_id: int) -> Any:
    context = web_context()
    stored = _rule(rule_id)
    if request.method == "GET":
        return _render_form(
            stored.model_dump(mode="json"),
            format_conditions(stored.conditions),
            _prior_fields(stored.prior),
            rule_id,
        )
    try:
        data = _form_data(stored.name)
        rule = validate_rule(data, _destination_names(), _pipeline_names())
        update_rule(context.engine, rule_id, rule, actor=_actor(), address=client_address())
    except RuleEditError as exc:
        flash(f"Not saved: {exc}", "error")
        form = _submitted(stored.name)
        return _render_form(
            form, request.form.get("conditions", ""), _submitted_prior(), rule_id, 400
        )
    flash(f"Rule {stored.name} saved.", "info")
    return redirect(url_for("rules.index"))


@blueprint.route("/rules/<int:rule_id>/enabled", methods=["POST"])
@requires_role(Role.ADMIN)
def toggle(rule_id: int) -> Response:
    stored = _rule(rule_id)
    enabled = request.form.get("enabled") == "true"
    set_enabled(web_context().engine, rule_id, enabled, actor=_actor(), address=client_address())
    flash(f"Rule {stored.name} {'enabled' if enabled else 'disabled'}.", "info")
    return redirect(url_for("rules.index"))


@blueprint.route("/rules/<int:rule_id>/move", methods=["POST"])
@requires_role(Role.ADMIN)
def move(rule_id: int) -> Response:
    stored = _rule(rule_id)
    up = request.form.get("direction") == "up"
    if not move_rule(web_context().engine, rule_id, up, actor=_actor(), address=client_address()):
        flash(f"Rule {stored.name} is already {'first' if up else 'last'}.", "info")
    return redirect(url_for("rules.index"))


@blueprint.route("/rules/<int:rule_id>/test")
@requires_role(Role.VIEWER)
def test(rule_id: int) -> tuple[str, int]:
    stored = _rule(rule_id)
    study_uid = request.args.get("study", "").strip()
    evaluation: RuleEvaluation | None = None
    problem = None
    if study_uid:
        context = web_context()
        try:
            with context.engine.connect() as connection:
                evaluation = evaluate_rule(connection, stored, study_uid)
        except StudyNotFound as exc:
            problem = str(exc)
    return (
        render_template(
            "rule_test.html",
            rule=stored,
            study_uid=study_uid,
            evaluation=evaluation,
            problem=problem,
        ),
        404 if problem else 200,
    )
