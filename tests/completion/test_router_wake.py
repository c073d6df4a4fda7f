"""The gateway's router routes a study as soon as this process completes it, not at its next
poll: here it polls every hour, so a job within seconds proves the wake-up. Real listener,
SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.completion.signals import QUIET_PERIOD_SIGNAL
from tests.completion.conftest import Site
from tests.completion.modality import make_study, store


def test_a_study_complete_by_its_quiet_period_is_routed_at_once(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with(quiet_period_s=1.0)
    study = make_study(tmp_path, [4])
    for paths in study.series.values():
        store(site.port, paths)
    site.wait_complete(study.study_uid, timeout_s=10)
    assert site.study(study.study_uid).completed_by == QUIET_PERIOD_SIGNAL
    jobs = site.wait_jobs(study.study_uid, timeout_s=5)
    assert [job.rule_name for job in jobs] == ["chest-ct"]
