"""Changes to the `routing_rules` table from the admin UI, each audited with the user, and
the text form of conditions (`attribute operator value`, one per line)."""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, func, insert, select, update

from gateway.audit import AuditKind, audit_row, record, utcnow
from gateway.database import writer_queue
from gateway.models import RoutingRule
from gateway.routing.config import NUMERIC_ATTRIBUTES, Condition, RuleSettings
from gateway.routing.seed import prior_json

_NUMERIC_OPERATORS = ("less_than", "less_or_equal", "greater_than", "greater_or_equal")


class RuleEditError(ValueError):
    """The rule was not saved; the message says what was expected and found."""


def parse_conditions(text: str) -> list[dict[str, Any]]:
    conditions: list[dict[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) != 3:
            raise RuleEditError(
                f"condition line {number}: expected 'attribute operator value', found {line!r}"
            )
        attribute, operator, value_text = parts
        value: str | float | list[str]
        if operator == "in":
            value = [v.strip() for v in value_text.split(",") if v.strip()]
        elif operator in _NUMERIC_OPERATORS and attribute in NUMERIC_ATTRIBUTES:
            try:
                value = float(value_text)
            except ValueError as exc:
                raise RuleEditError(
                    f"condition line {number}: expected a number, found {value_text!r}"
                ) from exc
        else:
            value = value_text.strip()
        conditions.append({"attribute": attribute, "operator": operator, "value": value})
    return conditions


def _prior_number(field: str, text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise RuleEditError(f"prior {field}: expected {expected}, found {text!r}")
    return value


def parse_prior(within_years: str, same_body_part: bool, wait_s: str) -> dict[str, Any] | None:
    """The prior fields of the editor: both numbers blank is no prior; the ranges are
    checked with the rest of the rule (`PriorRequirement`)."""
    years, wait = within_years.strip(), wait_s.strip()
    if not years and not wait:
        return None
    if not years or not wait:
        shown = {k: repr(v) if v else "blank" for k, v in (("years", years), ("wait", wait))}
        raise RuleEditError(
            "prior: expected within_years and wait_s both given (or both blank for no "
            f"prior), found within_years {shown['years']} and wait_s {shown['wait']}"
        )
    return {
        "within_years": _prior_number("within_years", years, "a number of years"),
        "same_body_part": same_body_part,
        "wait_s": _prior_number("wait_s", wait, "a number of seconds"),
    }


def format_conditions(conditions: list[Condition]) -> str:
    lines = []
    for c in conditions:
        if isinstance(c.value, list):
            value = ", ".join(c.value)
        elif isinstance(c.value, float):
            value = f"{c.value:g}"
        else:
            value = str(c.value)
        lines.append(f"{c.attribute} {c.operator} {value}")
    return "\n".join(lines)


def _describe(exc: ValidationError) -> str:
    """'field: message (found value)' per error; a whole rule or condition is not echoed."""
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "rule"
        found = error.get("input")
        shown = "" if found is None or isinstance(found, dict | list) else f" (found {found!r})"
        problems.append(f"{where}: {error['msg']}{shown}")
    return "; ".join(problems)


def validate_rule(
    data: dict[str, Any], destination_names: list[str], pipeline_names: list[str] | None = None
) -> RuleSettings:
    """A rule from the editor; `pipeline_names` (the registry's) when given must hold its
    pipeline."""
    try:
        rule = RuleSettings(**data)
    except ValidationError as exc:
        raise RuleEditError(_describe(exc)) from exc
    unknown = sorted(set(rule.destinations or []) - set(destination_names))
    if unknown:
        raise RuleEditError(f"expected destinations among {destination_names}, found {unknown}")
    if pipeline_names is not None and rule.pipeline not in pipeline_names:
        raise RuleEditError(
            f"pipeline: expected a registered pipeline {pipeline_names}, found {rule.pipeline!r}"
        )
    return rule


def _values(rule: RuleSettings) -> dict[str, Any]:
    return {
        "enabled": rule.enabled,
        "priority": rule.priority.value,
        "conditions": [c.model_dump(mode="json") for c in rule.conditions],
        "pipeline": rule.pipeline,
        "destinations": rule.destinations,
        "rerun_on_update": rule.rerun_on_update,
        "prior": prior_json(rule),
        "trigger": rule.trigger,
        "series_quiet_period_s": rule.series_quiet_period_s,
        "quiet_period_s": rule.quiet_period_s,
    }


def create_rule(engine: Engine, rule: RuleSettings, *, actor: str, address: str) -> int:
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        if connection.execute(select(RoutingRule.id).where(RoutingRule.name == rule.name)).first():
            raise RuleEditError(f"expected a new rule name, found {rule.name!r} taken")
        last = connection.execute(select(func.max(RoutingRule.position))).scalar()
        position = 0 if last is None else int(last) + 1
        rule_id = connection.execute(
            insert(RoutingRule)
            .values(
                name=rule.name, position=position, created_at=now, updated_at=now, **_values(rule)
            )
            .returning(RoutingRule.id)
        ).scalar_one()
        record(
            connection,
            audit_row(
                AuditKind.RULE_CREATED,
                actor=actor,
                source_address=address,
                detail={"rule": rule.name, "position": position, **_values(rule)},
                occurred_at=now,
            ),
        )
    return int(rule_id)


def update_rule(
    engine: Engine, rule_id: int, rule: RuleSettings, *, actor: str, address: str
) -> None:
    now = utcnow()
    new = _values(rule)
    with writer_queue(engine), engine.begin() as connection:
        row = connection.execute(
            select(RoutingRule.__table__).where(RoutingRule.id == rule_id)
        ).one_or_none()
        if row is None:
            raise RuleEditError(f"expected rule {rule_id} to exist, found none")
        before = {k: getattr(row, k) for k in new}
        changed = {k: {"from": before[k], "to": v} for k, v in new.items() if before[k] != v}
        if not changed:
            return
        connection.execute(
            update(RoutingRule).where(RoutingRule.id == rule_id).values(updated_at=now, **new)
        )
        record(
            connection,
            audit_row(
                AuditKind.RULE_UPDATED,
                actor=actor,
                source_address=address,
                detail={"rule": row.name, "changed": changed},
                occurred_at=now,
            ),
        )


def set_enabled(engine: Engine, rule_id: int, enabled: bool, *, actor: str, address: str) -> None:
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        name = connection.execute(
            select(RoutingRule.name).where(RoutingRule.id == rule_id)
        ).scalar()
        if name is None:
            raise RuleEditError(f"expected rule {rule_id} to exist, found none")
        connection.execute(
            update(RoutingRule)
            .where(RoutingRule.id == rule_id)
            .values(enabled=enabled, updated_at=now)
        )
        record(
            connection,
            audit_row(
                AuditKind.RULE_ENABLED if enabled else AuditKind.RULE_DISABLED,
                actor=actor,
                source_address=address,
                detail={"rule": name},
                occurred_at=now,
            ),
        )


def move_rule(engine: Engine, rule_id: int, up: bool, *, actor: str, address: str) -> bool:
    """Swap the rule with its neighbour above (up) or below; False when already first/last."""
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        row = connection.execute(
            select(RoutingRule.name, RoutingRule.position).where(RoutingRule.id == rule_id)
        ).one_or_none()
        if row is None:
            raise RuleEditError(f"expected rule {rule_id} to exist, found none")
        neighbour_query = select(RoutingRule.id, RoutingRule.name, RoutingRule.position)
        if up:
            neighbour_query = neighbour_query.where(RoutingRule.position < row.position).order_by(
                RoutingRule.position.desc()
            )
        else:
            neighbour_query = neighbour_query.where(RoutingRule.position > row.position).order_by(
                RoutingRule.position
            )
        neighbour = connection.execute(neighbour_query.limit(1)).one_or_none()
        if neighbour is None:
            return False
        connection.execute(
            update(RoutingRule)
            .where(RoutingRule.id == rule_id)
            .values(position=neighbour.position, updated_at=now)
        )
        connection.execute(
            update(RoutingRule)
            .where(RoutingRule.id == neighbour.id)
            .values(position=row.position, updated_at=now)
        )
        record(
            connection,
            audit_row(
                AuditKind.RULE_MOVED,
                actor=actor,
                source_address=address,
                detail={
                    "rule": row.name,
                    "from": row.position,
                    "to": neighbour.position,
                    "swapped_with": neighbour.name,
                },
                occurred_at=now,
            ),
        )
    return True
