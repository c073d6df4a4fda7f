"""Admin actions on a rule's shadow, each one audited with the user: start (or change) the
shadow pipeline, stop it, and promote it: the shadow pipeline becomes the rule's pipeline.

Promotion is conditional on the rule as the admin saw it (its pipeline and shadow), so a
confirmation given for one pair never promotes another that a colleague set meanwhile; the
evidence shown on the confirmation page goes into the audit event."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select, update

from gateway.audit import AuditKind, audit_row, record, utcnow
from gateway.database import writer_queue
from gateway.models import RoutingRule


class ShadowActionRefused(ValueError):
    """The action was not done; the message says what was expected and found."""


def set_shadow(
    engine: Engine,
    rule_id: int,
    shadow_pipeline: str | None,
    registered: list[str],
    *,
    actor: str,
    address: str,
) -> None:
    """Run `shadow_pipeline` beside the rule's pipeline from the next study on (None: stop)."""
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        row = connection.execute(
            select(RoutingRule.name, RoutingRule.pipeline, RoutingRule.shadow_pipeline).where(
                RoutingRule.id == rule_id
            )
        ).one_or_none()
        if row is None:
            raise ShadowActionRefused(f"expected rule {rule_id} to exist, found none")
        if shadow_pipeline is not None:
            if shadow_pipeline not in registered:
                raise ShadowActionRefused(
                    f"shadow pipeline: expected a registered pipeline {registered}, found "
                    f"{shadow_pipeline!r}"
                )
            if shadow_pipeline == row.pipeline:
                raise ShadowActionRefused(
                    f"shadow pipeline: expected a pipeline other than the rule's own "
                    f"({row.pipeline!r}), found the same"
                )
        if shadow_pipeline == row.shadow_pipeline:
            return
        connection.execute(
            update(RoutingRule)
            .where(RoutingRule.id == rule_id)
            .values(shadow_pipeline=shadow_pipeline, updated_at=now)
        )
        record(
            connection,
            audit_row(
                AuditKind.RULE_SHADOW_CLEARED
                if shadow_pipeline is None
                else AuditKind.RULE_SHADOW_SET,
                actor=actor,
                source_address=address,
                detail={
                    "rule": row.name,
                    "pipeline": row.pipeline,
                    "shadow_pipeline": {"from": row.shadow_pipeline, "to": shadow_pipeline},
                },
                occurred_at=now,
            ),
        )


def promote_shadow(
    engine: Engine,
    rule_id: int,
    *,
    expected_pipeline: str,
    expected_shadow: str,
    versions: dict[str, str],
    evidence: dict[str, Any],
    actor: str,
    address: str,
) -> None:
    """Make the rule's shadow pipeline its pipeline and end the shadow, if the rule still
    has the pipeline and shadow the admin confirmed. `versions`: pipeline name -> version
    registered now; `evidence`: the comparison summary the admin saw (audited)."""
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        name = connection.execute(
            update(RoutingRule)
            .where(
                RoutingRule.id == rule_id,
                RoutingRule.pipeline == expected_pipeline,
                RoutingRule.shadow_pipeline == expected_shadow,
            )
            .values(pipeline=expected_shadow, shadow_pipeline=None, updated_at=now)
            .returning(RoutingRule.name)
        ).scalar()
        if name is None:
            found = connection.execute(
                select(RoutingRule.pipeline, RoutingRule.shadow_pipeline).where(
                    RoutingRule.id == rule_id
                )
            ).one_or_none()
            raise ShadowActionRefused(
                f"expected rule {rule_id} with pipeline {expected_pipeline!r} and shadow "
                f"{expected_shadow!r}, found "
                + ("no such rule" if found is None else f"{found[0]!r} and {found[1]!r}")
            )
        record(
            connection,
            audit_row(
                AuditKind.RULE_PROMOTED,
                actor=actor,
                source_address=address,
                detail={
                    "rule": name,
                    "from": {
                        "pipeline": expected_pipeline,
                        "version": versions.get(expected_pipeline),
                    },
                    "to": {"pipeline": expected_shadow, "version": versions.get(expected_shadow)},
                    "evidence": evidence,
                },
                occurred_at=now,
            ),
        )
