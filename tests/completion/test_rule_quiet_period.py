"""A rule's own quiet period (`quiet_period_s`) replaces `assembly.quiet_period_s` for the
studies it matches, shorter or longer; other studies keep the default. Real listener; the
test drives the assembler's clock. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from gateway.assembly import StudyAssembler
from gateway.audit import utcnow
from tests.completion.conftest import QUIET_PERIOD_S, Site
from tests.completion.modality import make_study, store


def _pass_after(site: Site, seconds: float) -> list[str]:
    later = utcnow() + timedelta(seconds=seconds)
    return StudyAssembler(site.engine, QUIET_PERIOD_S).complete_quiet_studies(now=later)


def _ct(modality: str = "CT") -> dict[str, object]:
    return {"attribute": "modality", "value": modality}


def test_a_shorter_rule_quiet_period_completes_its_studies_early(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with(rules=[{"name": "quick-ct", "quiet_period_s": 5, "conditions": [_ct()]}])
    study = make_study(tmp_path, [4])
    store(site.port, next(iter(study.series.values())))
    assert _pass_after(site, 2) == []
    assert _pass_after(site, 6) == [study.study_uid]  # not the default 300 s
    [complete] = site.audit("study.complete")
    assert complete["quiet_period_s"] == 5


def test_a_longer_rule_quiet_period_holds_and_other_rules_do_not_apply(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    rules = [
        {"name": "quick-mr", "quiet_period_s": 5, "conditions": [_ct("MR")]},
        {"name": "slow-ct", "quiet_period_s": 2 * QUIET_PERIOD_S, "conditions": [_ct()]},
    ]
    site = site_with(rules=rules)
    study = make_study(tmp_path, [4])
    store(site.port, next(iter(study.series.values())))
    assert _pass_after(site, 6) == []  # the MR rule's period is not this study's
    assert _pass_after(site, QUIET_PERIOD_S + 1) == []  # nor the default
    assert _pass_after(site, 2 * QUIET_PERIOD_S + 1) == [study.study_uid]
    [complete] = site.audit("study.complete")
    assert complete["quiet_period_s"] == 2 * QUIET_PERIOD_S
