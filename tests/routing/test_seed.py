"""Seeding `routing_rules` from the settings: idempotent, never overwrites edits, audited."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, insert, update

from gateway.audit import utcnow
from gateway.models import RoutingRule
from gateway.routing.config import Condition, Priority, RuleSettings
from gateway.routing.seed import InvalidStoredRule, load_rules, seed_rules
from tests.db_queries import audit_kinds

THIN_CHEST = RuleSettings(
    name="thin_chest_ct",
    priority=Priority.URGENT,
    conditions=[
        Condition(attribute="modality", value="CT"),
        Condition(attribute="body_part_examined", operator="in", value=["CHEST", "LUNG"]),
        Condition(attribute="slice_thickness", operator="less_or_equal", value=1.5),
    ],
    destinations=["pacs"],
    rerun_on_update=True,
)
FROM_SCANNER = RuleSettings(
    name="from_scanner_2",
    enabled=False,
    conditions=[Condition(attribute="calling_ae", value="CTSCANNER2")],
)
DEFAULT = RuleSettings(name="default")


def test_seeding_inserts_in_order_round_trips_and_audits(engine: Engine) -> None:
    with engine.begin() as connection:
        assert seed_rules(connection, [THIN_CHEST, FROM_SCANNER, DEFAULT]) == 3
    with engine.connect() as connection:
        rules = load_rules(connection)
    assert [(r.name, r.position) for r in rules] == [
        ("thin_chest_ct", 0),
        ("from_scanner_2", 1),
        ("default", 2),
    ]
    # Stored and loaded back field for field, disabled rules included.
    for loaded, seeded in zip(rules, [THIN_CHEST, FROM_SCANNER, DEFAULT], strict=True):
        assert loaded.model_dump(exclude={"id", "position"}) == seeded.model_dump()
    assert rules[1].enabled is False
    assert audit_kinds(engine)["rule.seeded"] == 3


def test_seeding_again_changes_nothing(engine: Engine) -> None:
    with engine.begin() as connection:
        seed_rules(connection, [THIN_CHEST, DEFAULT])
    with engine.begin() as connection:
        assert seed_rules(connection, [THIN_CHEST, DEFAULT]) == 0
    with engine.connect() as connection:
        assert [r.name for r in load_rules(connection)] == ["thin_chest_ct", "default"]
    assert audit_kinds(engine)["rule.seeded"] == 2


def test_edits_in_the_database_survive_seeding_and_new_rules_go_last(engine: Engine) -> None:
    with engine.begin() as connection:
        seed_rules(connection, [THIN_CHEST, DEFAULT])
        # What the admin UI does: edit a seeded rule, add one of its own far down the list.
        connection.execute(
            update(RoutingRule)
            .where(RoutingRule.name == "thin_chest_ct")
            .values(
                enabled=False,
                priority="routine",
                conditions=[{"attribute": "modality", "operator": "equals", "value": "MR"}],
            )
        )
        now = utcnow()
        connection.execute(
            insert(RoutingRule).values(
                name="added_in_ui",
                position=10,
                enabled=True,
                priority="urgent",
                conditions=[],
                pipeline="lung_nodules",
                destinations=None,
                rerun_on_update=False,
                created_at=now,
                updated_at=now,
            )
        )
    with engine.begin() as connection:
        assert seed_rules(connection, [THIN_CHEST, FROM_SCANNER, DEFAULT]) == 1
    with engine.connect() as connection:
        rules = {r.name: r for r in load_rules(connection)}
        order = [r.name for r in load_rules(connection)]
    edited = rules["thin_chest_ct"]
    assert edited.enabled is False
    assert edited.priority is Priority.ROUTINE
    assert edited.conditions == [Condition(attribute="modality", value="MR")]
    assert order == ["thin_chest_ct", "default", "added_in_ui", "from_scanner_2"]
    assert rules["from_scanner_2"].position == 11
    assert audit_kinds(engine)["rule.seeded"] == 3


def test_an_invalid_stored_rule_is_reported_by_name(engine: Engine) -> None:
    with engine.begin() as connection:
        seed_rules(connection, [THIN_CHEST])
        connection.execute(
            update(RoutingRule).values(
                conditions=[{"attribute": "patient_name", "operator": "equals", "value": "x"}]
            )
        )
    with engine.connect() as connection, pytest.raises(InvalidStoredRule) as raised:
        load_rules(connection)
    message = str(raised.value)
    assert "'thin_chest_ct'" in message
    assert "conditions.0.attribute" in message
