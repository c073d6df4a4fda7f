"""The `routing_rules` table: seeded from the settings, then owned by the admin UI (every
field, the `prior` a rule waits for included).

Seeding only adds rules whose name the table lacks, so an edit made in the database is never
overwritten by the settings file on the next start.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, func, select

from gateway.audit import AuditKind, audit_row, record, utcnow
from gateway.database import insert_ignoring_duplicates
from gateway.models import RoutingRule
from gateway.routing.config import RuleSettings


class InvalidStoredRule(Exception):
    """A rule in the database does not validate; the message names the rule and the error."""


class StoredRule(RuleSettings):
    """A rule as stored: the settings fields plus its row id and position (lower first)."""

    id: int
    position: int


def prior_json(rule: RuleSettings) -> dict[str, Any] | None:
    """The rule's `prior` as the table stores it (None: the rule asks for no prior)."""
    return None if rule.prior is None else rule.prior.model_dump(mode="json")


def seed_rules(connection: Connection, rules: Sequence[RuleSettings]) -> int:
    """Insert the rules whose name is not in the table yet, after the existing ones and in
    the given order; return how many were inserted. Runs in the caller's transaction."""
    existing = set(connection.execute(select(RoutingRule.name)).scalars())
    last = connection.execute(select(func.max(RoutingRule.position))).scalar()
    position = -1 if last is None else int(last)
    now = utcnow()
    inserted = 0
    for rule in rules:
        if rule.name in existing:
            continue
        position += 1
        row_id = connection.execute(
            insert_ignoring_duplicates(connection, RoutingRule, ["name"])
            .values(
                name=rule.name,
                position=position,
                enabled=rule.enabled,
                priority=rule.priority.value,
                conditions=[c.model_dump(mode="json") for c in rule.conditions],
                pipeline=rule.pipeline,
                destinations=rule.destinations,
                rerun_on_update=rule.rerun_on_update,
                prior=prior_json(rule),
                shadow_pipeline=rule.shadow_pipeline,
                trigger=rule.trigger,
                series_quiet_period_s=rule.series_quiet_period_s,
                quiet_period_s=rule.quiet_period_s,
                created_at=now,
                updated_at=now,
            )
            .returning(RoutingRule.id)
        ).scalar()
        if row_id is None:
            continue  # another process seeded it between our read and this insert
        inserted += 1
        record(
            connection,
            audit_row(
                AuditKind.RULE_SEEDED,
                actor="settings",
                detail={
                    "rule": rule.name,
                    "position": position,
                    "pipeline": rule.pipeline,
                    **({"prior": prior_json(rule)} if rule.prior else {}),
                    **({"shadow_pipeline": rule.shadow_pipeline} if rule.shadow_pipeline else {}),
                },
                occurred_at=now,
            ),
        )
    return inserted


def load_rules(connection: Connection) -> list[StoredRule]:
    """Every rule in position order, disabled ones included (their `enabled` is False).

    Raises InvalidStoredRule if a stored rule does not validate: routing with a rule
    silently dropped could send a study to the wrong pipeline.
    """
    rows = connection.execute(
        select(RoutingRule.__table__).order_by(RoutingRule.position, RoutingRule.id)
    ).all()
    rules = []
    for row in rows:
        try:
            rules.append(
                StoredRule(
                    id=row.id,
                    position=row.position,
                    name=row.name,
                    enabled=row.enabled,
                    priority=row.priority,
                    conditions=row.conditions,
                    pipeline=row.pipeline,
                    destinations=row.destinations,
                    rerun_on_update=row.rerun_on_update,
                    prior=row.prior,
                    shadow_pipeline=row.shadow_pipeline,
                    trigger=row.trigger,
                    series_quiet_period_s=row.series_quiet_period_s,
                    quiet_period_s=row.quiet_period_s,
                )
            )
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidStoredRule(
                f"routing rule {row.name!r} (position {row.position}): expected a valid "
                f"rule, found {problems}"
            ) from exc
    return rules
