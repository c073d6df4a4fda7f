"""Evaluate routing rules against a study in the database and pick the rule that routes it.

A rule matches when every study-level condition passes and at least one series passes every
series-level condition; those series are the rule's selection. Rules are tried in order and
the first enabled one that matches wins; a rule without conditions matches every study.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, func, select

from gateway.models import Instance, Series, Study
from gateway.routing.conditions import AttributeValue, evaluate_condition, series_label
from gateway.routing.config import STUDY_ATTRIBUTES, RuleSettings


class StudyNotFound(LookupError):
    """No study with the given Study Instance UID is in the database."""


@dataclass(frozen=True, slots=True)
class SeriesFacts:
    series_instance_uid: str
    series_number: int | None
    attributes: dict[str, AttributeValue]

    @property
    def label(self) -> str:
        return series_label(self.series_number, self.series_instance_uid)


@dataclass(frozen=True, slots=True)
class StudyFacts:
    """The routing attributes of a study and its series (no patient identity)."""

    study_instance_uid: str
    attributes: dict[str, AttributeValue]
    series: tuple[SeriesFacts, ...]


@dataclass(frozen=True, slots=True)
class RuleEvaluation:
    rule_name: str
    matched: bool
    series_instance_uids: tuple[str, ...]  # the series passing every series condition
    explanations: tuple[str, ...]  # one per condition tested (per series for series ones)
    reason: str | None  # why it did not match (or was skipped); None when matched
    skipped: bool = False  # disabled: not evaluated


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    study_instance_uid: str
    rule: RuleSettings | None  # the first enabled rule that matched, or None
    evaluations: tuple[RuleEvaluation, ...]  # each rule tried or skipped, in order

    @property
    def matched(self) -> RuleEvaluation | None:
        return next((e for e in self.evaluations if e.matched), None)

    @property
    def series_instance_uids(self) -> tuple[str, ...]:
        match = self.matched
        return () if match is None else match.series_instance_uids

    @property
    def reasons(self) -> list[str]:
        """Why each rule before the match (all of them, if none matched) did not route."""
        if not self.evaluations:
            return ["no routing rules"]
        return [f"rule {e.rule_name!r}: {e.reason}" for e in self.evaluations if not e.matched]


def load_study(connection: Connection, study_instance_uid: str) -> StudyFacts:
    study = connection.execute(
        select(Study.id, Study.study_description, Study.first_calling_ae).where(
            Study.study_instance_uid == study_instance_uid
        )
    ).first()
    if study is None:
        raise StudyNotFound(
            f"expected study {study_instance_uid} in the database, found no such study"
        )
    calling_ae = study.first_calling_ae
    if not calling_ae:
        calling_ae = connection.execute(
            select(func.min(Instance.calling_ae))
            .join(Series, Instance.series_id == Series.id)
            .where(Series.study_id == study.id)
        ).scalar()
    rows = connection.execute(
        select(
            Series.series_instance_uid,
            Series.series_number,
            Series.modality,
            Series.body_part_examined,
            Series.series_description,
            Series.slice_thickness,
            Series.instance_count,
        )
        .where(Series.study_id == study.id)
        .order_by(  # series without a number last on both databases
            Series.series_number.is_(None), Series.series_number, Series.series_instance_uid
        )
    ).all()
    series = tuple(
        SeriesFacts(
            series_instance_uid=row.series_instance_uid,
            series_number=row.series_number,
            attributes={
                "modality": row.modality,
                "body_part_examined": row.body_part_examined,
                "series_description": row.series_description,
                "slice_thickness": row.slice_thickness,
                "series_instance_count": row.instance_count,
            },
        )
        for row in rows
    )
    return StudyFacts(
        study_instance_uid=study_instance_uid,
        attributes={"study_description": study.study_description, "calling_ae": calling_ae},
        series=series,
    )


def evaluate_rule_on(facts: StudyFacts, rule: RuleSettings) -> RuleEvaluation:
    """Evaluate `rule` on already loaded study facts (see `load_study`)."""
    study_conditions = [c for c in rule.conditions if c.attribute in STUDY_ATTRIBUTES]
    series_conditions = [c for c in rule.conditions if c.attribute not in STUDY_ATTRIBUTES]
    explanations: list[str] = []
    study_failures: list[str] = []
    for condition in study_conditions:
        passed, text = evaluate_condition(condition, facts.attributes[condition.attribute])
        explanations.append(text)
        if not passed:
            study_failures.append(text)
    selected: list[str] = []
    series_failures: list[str] = []
    for series in facts.series:
        failed_here: list[str] = []
        for condition in series_conditions:
            passed, text = evaluate_condition(
                condition, series.attributes[condition.attribute], series.label
            )
            explanations.append(text)
            if not passed:
                failed_here.append(text)
        if failed_here:
            series_failures.append(failed_here[0])
        else:
            selected.append(series.series_instance_uid)
    reason = None
    if study_failures:
        reason = "study conditions failed: " + "; ".join(study_failures)
    elif not facts.series:
        reason = "the study has no series"
    elif not selected:
        reason = "no series passed every series condition: " + "; ".join(series_failures)
    return RuleEvaluation(
        rule_name=rule.name,
        matched=reason is None,
        series_instance_uids=tuple(selected) if reason is None else (),
        explanations=tuple(explanations),
        reason=reason,
    )


def evaluate_rule(
    connection: Connection, rule: RuleSettings, study_instance_uid: str
) -> RuleEvaluation:
    """Evaluate one rule on a study (enabled or not). Raises StudyNotFound."""
    return evaluate_rule_on(load_study(connection, study_instance_uid), rule)


def route_study(
    connection: Connection, study_instance_uid: str, rules: Sequence[RuleSettings]
) -> RoutingDecision:
    """The first enabled rule, in the given order, that matches the study.

    Pass the rules in position order (`load_rules` returns them so). Disabled rules are
    reported as skipped; rules after the match are not evaluated. Raises StudyNotFound.
    """
    facts = load_study(connection, study_instance_uid)
    evaluations: list[RuleEvaluation] = []
    for rule in rules:
        if not rule.enabled:
            evaluations.append(
                RuleEvaluation(rule.name, False, (), (), "disabled: skipped", skipped=True)
            )
            continue
        evaluation = evaluate_rule_on(facts, rule)
        evaluations.append(evaluation)
        if evaluation.matched:
            return RoutingDecision(study_instance_uid, rule, tuple(evaluations))
    return RoutingDecision(study_instance_uid, None, tuple(evaluations))
