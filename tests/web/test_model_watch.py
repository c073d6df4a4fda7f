"""The model watch pages with the Flask client on the real databases: the daily table with an
amber day and its sparklines, the comparison of a rule's shadow (disagreements first), and
the admin actions: start a shadow and promote it, each refused to other roles and without
the CSRF token, promotion only with the confirmation and for the pair the admin saw, every
change audited with the evidence."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from gateway.audit import utcnow
from gateway.models import AuditEvent, Job, RoutingRule
from gateway.monitoring.outcome import StudyOutcome
from gateway.routing.config import RuleSettings
from gateway.routing.seed import seed_rules
from gateway.settings import GatewaySettings
from gateway.shadow.compare import Comparison, SegmentMatch
from gateway.shadow.record import ShadowPair, save_comparison
from tests.monitoring.job_rows import add_jobs
from tests.monitoring.test_shadow_jobs import CANDIDATE, candidate_pipelines
from tests.web.conftest import csrf, web_settings

RULE = "chest-ct"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> GatewaySettings:
    return web_settings(
        tmp_path / "data",
        database_url,
        pipelines={"dirs": [str(candidate_pipelines(tmp_path / "pipelines"))]},
        monitoring={"baseline_studies": 100, "sigma": 3.0, "days": 30},
    )


def midnight(days_ago: int) -> datetime:
    now = utcnow()
    return datetime.combine((now - timedelta(days=days_ago)).date(), datetime.min.time(), UTC)


def drifted_history(engine: Engine) -> None:
    """100 baseline studies, three days like them, then yesterday's shifted scores."""
    rng = np.random.default_rng(22)
    for days_ago in range(9, 1, -1):
        add_jobs(engine, midnight(days_ago), list(np.clip(rng.normal(0.3, 0.12, 20), 0, 1)))
    add_jobs(engine, midnight(1), list(np.clip(rng.normal(0.6, 0.12, 20), 0, 1)))


def rule_with_shadow(engine: Engine) -> int:
    with engine.begin() as connection:
        seed_rules(
            connection,
            [RuleSettings(name=RULE, pipeline="lung_nodules", shadow_pipeline=CANDIDATE)],
        )
        return int(
            connection.execute(select(RoutingRule.id).where(RoutingRule.name == RULE)).scalar_one()
        )


def compared_pairs(engine: Engine) -> list[str]:
    """Three studies compared: two agree (Dice 0.9, 0.7), one disagrees; returns their UIDs
    in the order the page must list them (disagreement first, then the lowest Dice)."""
    day = midnight(1)
    primaries = add_jobs(engine, day, [0.8, 0.7, 0.2])
    shadows = [
        add_jobs(engine, day, [s], pipeline=CANDIDATE, version="2", shadow_of=p)[0]
        for p, s in zip(primaries, [0.82, 0.66, 0.71], strict=True)
    ]
    uids = []
    with engine.begin() as connection:
        for p, s, (pp, sp, dice) in zip(
            primaries,
            shadows,
            [(True, True, 0.9), (True, True, 0.7), (False, True, 0.5)],
            strict=True,
        ):
            uid = connection.execute(select(Job.study_instance_uid).where(Job.id == p)).scalar_one()
            uids.append(uid)
            match = SegmentMatch("nodule", "nodule-1", "nodule-1", dice, 100, 100)
            save_comparison(
                connection,
                ShadowPair(p, s, uid),
                Comparison(StudyOutcome(0.5 + 0.3 * pp, pp, 1), StudyOutcome(0.8, sp, 1), (match,)),
                utcnow(),
            )
    return [uids[2], uids[1], uids[0]]


def audit_events(engine: Engine, kind: str) -> list[AuditEvent]:
    with engine.connect() as connection:
        return list(connection.execute(select(AuditEvent).where(AuditEvent.kind == kind)).all())


def rule_row(engine: Engine) -> tuple[str, str | None]:
    with engine.connect() as connection:
        row = connection.execute(
            select(RoutingRule.pipeline, RoutingRule.shadow_pipeline).where(
                RoutingRule.name == RULE
            )
        ).one()
    return row[0], row[1]


def test_the_daily_table_shows_the_shifted_day_amber(
    engine: Engine, client_as: Callable[[str | None], FlaskClient]
) -> None:
    drifted_history(engine)
    page = client_as("viewer").get("/models/watch")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    yesterday = midnight(1).date().isoformat()
    rows = dict(re.findall(r'data-day="([\d-]+)" data-status="(\w+)"', html))
    assert rows[yesterday] == "amber", rows
    assert [rows[midnight(n).date().isoformat()] for n in (2, 3, 4)] == ["ok"] * 3
    assert rows[midnight(9).date().isoformat()] == "baseline"
    assert '<td class="num amber" data-statistic="score_mean">' in html
    assert html.count('<svg class="sparkline"') >= 4  # one per watched statistic
    assert 'class="band"' in html and 'class="dot amber"' in html
    assert '<span class="mw-status amber version-status">1 amber day</span>' in html


def _comparison_cells(page: str, uid: str) -> list[str]:
    """The text of each cell of the comparison's row for one study."""
    row = page.split(f'data-study="{uid}">', 1)[1].split("</tr>", 1)[0]
    texts = re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)
    return [" ".join(re.sub(r"<[^>]+>", "", t).split()) for t in texts]


def test_the_comparison_lists_disagreements_first(
    engine: Engine, client_as: Callable[[str | None], FlaskClient]
) -> None:
    rule_id = rule_with_shadow(engine)
    expected = compared_pairs(engine)
    client = client_as("viewer")
    html = client.get(f"/models/shadow/{rule_id}").get_data(as_text=True)
    assert re.findall(r'<tr class="[^"]*" data-study="([^"]+)"', html) == expected
    # Per study: the findings of both, whether they agree, the scores and their difference
    # (shadow minus primary), the mean Dice and each segment's Dice.
    cells = {uid: _comparison_cells(html, uid) for uid in expected}
    disagree = cells[expected[0]]
    assert disagree[2:] == [
        "absent (1) / present (1)",
        "no",
        "0.500 / 0.800",
        "+0.300",
        "0.500",
        "nodule-1 ↔ nodule-1: 0.50",
    ], disagree
    for uid, dice in ((expected[1], "0.700"), (expected[2], "0.900")):
        row = cells[uid]
        assert row[2:4] == ["present (1) / present (1)", "yes"], row
        assert row[4] == "0.800 / 0.800" and row[5] in ("+0.000", "-0.000"), row
        assert row[6] == dice and row[7] == f"nodule-1 ↔ nodule-1: {dice[:4]}", row
    summary = re.search(r'<td class="num agreement">([^<]*)</td>', html)
    assert summary is not None and summary.group(1) == "66.7 %"
    assert "promote" not in html.lower()  # viewers see no promotion
    only = client.get(f"/models/shadow/{rule_id}?disagree=1").get_data(as_text=True)
    assert re.findall(r'data-study="([^"]+)"', only) == expected[:1]
    listing = client.get("/models/shadow").get_data(as_text=True)
    assert f'data-rule="{RULE}"' in listing and CANDIDATE in listing


def test_setting_a_shadow_is_for_admins_and_audited(
    engine: Engine, client_as: Callable[[str | None], FlaskClient]
) -> None:
    rule_id = rule_with_shadow(engine)
    url = f"/models/shadow/{rule_id}/shadow"
    for role in ("viewer", "operator"):
        client = client_as(role)
        answer = client.post(url, data={"shadow_pipeline": "", "csrf_token": csrf(client)})
        assert answer.status_code == 403, role
    admin = client_as("admin")
    assert admin.post(url, data={"shadow_pipeline": ""}).status_code == 400  # no CSRF token
    assert rule_row(engine) == ("lung_nodules", CANDIDATE)

    assert (
        admin.post(url, data={"shadow_pipeline": "", "csrf_token": csrf(admin)}).status_code == 302
    )
    assert rule_row(engine) == ("lung_nodules", None)
    (cleared,) = audit_events(engine, "rule.shadow_cleared")
    assert cleared.actor == "admin"
    assert cleared.detail["shadow_pipeline"] == {"from": CANDIDATE, "to": None}

    refused = admin.post(
        url, data={"shadow_pipeline": "lung_nodules", "csrf_token": csrf(admin)}
    )  # the rule's own pipeline
    assert refused.status_code == 302 and rule_row(engine) == ("lung_nodules", None)
    admin.post(url, data={"shadow_pipeline": "no_such", "csrf_token": csrf(admin)})
    assert rule_row(engine) == ("lung_nodules", None)
    assert (
        admin.post(url, data={"shadow_pipeline": CANDIDATE, "csrf_token": csrf(admin)}).status_code
        == 302
    )
    assert rule_row(engine) == ("lung_nodules", CANDIDATE)
    (started,) = audit_events(engine, "rule.shadow_set")
    assert started.detail["shadow_pipeline"] == {"from": None, "to": CANDIDATE}


def test_promotion_needs_the_confirmation_and_is_audited_with_the_evidence(
    engine: Engine, client_as: Callable[[str | None], FlaskClient]
) -> None:
    rule_id = rule_with_shadow(engine)
    compared_pairs(engine)
    url = f"/models/shadow/{rule_id}/promote"
    confirmed = {
        "expected_pipeline": "lung_nodules",
        "expected_shadow": CANDIDATE,
        "confirm": "yes",
    }
    operator = client_as("operator")
    assert operator.get(url).status_code == 403
    assert operator.post(url, data={**confirmed, "csrf_token": csrf(operator)}).status_code == 403

    admin = client_as("admin")
    page = admin.get(url).get_data(as_text=True)
    assert 'id="evidence"' in page and "66.7 %" in page and 'name="confirm"' in page
    unconfirmed = {k: v for k, v in confirmed.items() if k != "confirm"}
    answer = admin.post(url, data={**unconfirmed, "csrf_token": csrf(admin)})
    assert answer.status_code == 400
    assert rule_row(engine) == ("lung_nodules", CANDIDATE)
    stale = {**confirmed, "expected_shadow": "chest_xray_nodule", "csrf_token": csrf(admin)}
    admin.post(url, data=stale)  # a confirmation given for another pair
    assert rule_row(engine) == ("lung_nodules", CANDIDATE)
    assert audit_events(engine, "rule.promoted") == []

    answer = admin.post(url, data={**confirmed, "csrf_token": csrf(admin)})
    assert answer.status_code == 302
    assert rule_row(engine) == (CANDIDATE, None)
    (promoted,) = audit_events(engine, "rule.promoted")
    assert promoted.actor == "admin"
    assert promoted.detail["from"] == {"pipeline": "lung_nodules", "version": "1"}
    assert promoted.detail["to"] == {"pipeline": CANDIDATE, "version": "2"}
    evidence = promoted.detail["evidence"]
    assert evidence["compared"] == 3 and evidence["disagree"] == 1
    assert evidence["agreement"] == pytest.approx(2 / 3, abs=1e-4)
    assert evidence["mean_dice"] == pytest.approx(0.7, abs=1e-4)
