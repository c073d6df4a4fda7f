"""Watch the models: daily statistics per pipeline version with control limits and amber
days (viewer and above); shadow runs, the comparison of each rule's shadow with its pipeline,
and the admin actions: start or stop a shadow, promote it (with a confirmation, audited)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from markupsafe import Markup
from werkzeug.wrappers import Response

from gateway.audit import utcnow
from gateway.monitoring.limits import Limit
from gateway.monitoring.sparkline import SparkPoint, sparkline
from gateway.monitoring.statistics import TITLES, Statistic
from gateway.monitoring.watch import DayStatus, VersionWatch, watch_all
from gateway.routing.seed import InvalidStoredRule, StoredRule, load_rules
from gateway.shadow.manage import ShadowActionRefused, promote_shadow, set_shadow
from gateway.shadow.report import PairSummary, pair_summaries, study_comparisons
from gateway.web.context import web_context
from gateway.web.security import client_address, current_user, requires_role
from gateway.web.users import Role

blueprint = Blueprint("model_watch", __name__)


@dataclass(frozen=True)
class StatisticRow:
    statistic: Statistic
    title: str
    limit: Limit | None
    latest: float | None
    spark: Markup


def _statistic_rows(watch: VersionWatch) -> list[StatisticRow]:
    rows = []
    for statistic in Statistic:
        points = [
            SparkPoint(
                value=d.statistics.values.get(statistic),
                band=d.bands.get(statistic),
                status="amber"
                if statistic in d.outside
                else ("baseline" if d.status is DayStatus.BASELINE else "ok"),
                title=f"{d.statistics.day.isoformat()}: "
                + (
                    f"{d.statistics.values[statistic]:.3g}"
                    if statistic in d.statistics.values
                    else "none"
                ),
            )
            for d in watch.days
        ]
        if all(p.value is None for p in points) and statistic not in watch.limits:
            continue
        latest = next((p.value for p in reversed(points) if p.value is not None), None)
        rows.append(
            StatisticRow(
                statistic,
                TITLES[statistic],
                watch.limits.get(statistic),
                latest,
                sparkline(points, f"{TITLES[statistic]} per day"),
            )
        )
    return rows


@blueprint.route("/models/watch")
@requires_role(Role.VIEWER)
def index() -> str:
    context = web_context()
    settings = context.settings
    with context.engine.connect() as connection:
        watches = watch_all(connection, settings.monitoring, utcnow(), settings.pipeline_registry())
    return render_template(
        "model_watch.html",
        watches=[(w, _statistic_rows(w)) for w in watches],
        statistics=list(Statistic),
        titles=TITLES,
        settings=settings.monitoring,
    )


def _rules() -> list[StoredRule]:
    with web_context().engine.connect() as connection:
        return load_rules(connection)


def _rule(rule_id: int) -> StoredRule:
    try:
        rules = _rules()
    except InvalidStoredRule as exc:
        abort(500, description=str(exc))
    for rule in rules:
        if rule.id == rule_id:
            return rule
    abort(404, description=f"expected rule {rule_id}, found none")


def _versions() -> dict[str, str]:
    return {p.name: p.description.version for p in web_context().settings.pipeline_registry()}


def _actor() -> str:
    user = current_user()
    assert user is not None
    return user.username


@blueprint.route("/models/shadow")
@requires_role(Role.VIEWER)
def shadows() -> str:
    try:
        rules, problem = _rules(), None
    except InvalidStoredRule as exc:
        rules, problem = [], str(exc)
    with web_context().engine.connect() as connection:
        summaries = pair_summaries(connection)
    return render_template(
        "model_shadow.html",
        rules=rules,
        problem=problem,
        summaries=summaries,
        versions=_versions(),
        rule_ids={r.name: r.id for r in rules},
    )


def _current(rule: StoredRule, summaries: list[PairSummary]) -> PairSummary | None:
    """The summary of the rule's pipeline against its shadow as registered now."""
    versions = _versions()
    for s in summaries:
        if (
            s.primary_pipeline == rule.pipeline
            and s.shadow_pipeline == rule.shadow_pipeline
            and s.shadow_version == versions.get(s.shadow_pipeline)
        ):
            return s
    return None


@blueprint.route("/models/shadow/<int:rule_id>")
@requires_role(Role.VIEWER)
def comparison(rule_id: int) -> str:
    rule = _rule(rule_id)
    with web_context().engine.connect() as connection:
        summaries = pair_summaries(connection, rule.name)
        shown = request.args.get("shadow") or rule.shadow_pipeline
        version = request.args.get("version") or None
        if shown is None and summaries:
            shown, version = summaries[0].shadow_pipeline, summaries[0].shadow_version
        disagreements_only = request.args.get("disagree") == "1"
        studies = (
            study_comparisons(
                connection,
                rule.name,
                shown,
                version,
                disagreements_only=disagreements_only,
            )
            if shown
            else []
        )
    return render_template(
        "model_shadow_rule.html",
        rule=rule,
        summaries=summaries,
        current=_current(rule, summaries),
        shown=shown,
        version=version,
        studies=studies,
        disagreements_only=disagreements_only,
        versions=_versions(),
        rule_ids={rule.name: rule.id},
    )


@blueprint.route("/models/shadow/<int:rule_id>/shadow", methods=["POST"])
@requires_role(Role.ADMIN)
def change_shadow(rule_id: int) -> Response:
    rule = _rule(rule_id)
    chosen = request.form.get("shadow_pipeline", "").strip() or None
    try:
        set_shadow(
            web_context().engine,
            rule_id,
            chosen,
            sorted(_versions()),
            actor=_actor(),
            address=client_address(),
        )
    except ShadowActionRefused as exc:
        flash(f"Not changed: {exc}", "error")
        return redirect(url_for("model_watch.shadows"))
    flash(
        f"Rule {rule.name}: shadow stopped."
        if chosen is None
        else f"Rule {rule.name}: {chosen} now runs in shadow (results never delivered).",
        "info",
    )
    return redirect(url_for("model_watch.comparison", rule_id=rule_id))


@blueprint.route("/models/shadow/<int:rule_id>/promote", methods=["GET", "POST"])
@requires_role(Role.ADMIN)
def promote(rule_id: int) -> Any:
    rule = _rule(rule_id)
    if rule.shadow_pipeline is None:
        flash(f"Rule {rule.name} runs no shadow to promote.", "error")
        return redirect(url_for("model_watch.comparison", rule_id=rule_id))
    with web_context().engine.connect() as connection:
        current = _current(rule, pair_summaries(connection, rule.name))
    if request.method == "GET":
        return render_template(
            "model_promote.html", rule=rule, current=current, versions=_versions()
        )
    if request.form.get("confirm") != "yes":
        flash("Not promoted: expected the confirmation box ticked, found it empty.", "error")
        return (
            render_template("model_promote.html", rule=rule, current=current, versions=_versions()),
            400,
        )
    try:
        promote_shadow(
            web_context().engine,
            rule_id,
            expected_pipeline=request.form.get("expected_pipeline", ""),
            expected_shadow=request.form.get("expected_shadow", ""),
            versions=_versions(),
            evidence=current.evidence() if current is not None else {"compared": 0},
            actor=_actor(),
            address=client_address(),
        )
    except ShadowActionRefused as exc:
        flash(f"Not promoted: {exc}", "error")
        return redirect(url_for("model_watch.comparison", rule_id=rule_id))
    flash(
        f"Rule {rule.name}: {rule.shadow_pipeline} promoted; it now delivers, "
        f"{rule.pipeline} no longer runs.",
        "info",
    )
    return redirect(url_for("model_watch.comparison", rule_id=rule_id))
