"""A rule with `trigger = "series"` starts on its series as soon as that series is complete
(here: Images in Acquisition reached) while another series of the study still arrives; the
study's completion later does not run it again, unless a late instance changed the series.
Real listener; the test drives the router. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from gateway.assembly import StudyAssembler
from gateway.audit import utcnow
from tests.completion.conftest import QUIET_PERIOD_S, Site
from tests.completion.modality import make_study, store

SERIES_RULE = [
    {
        "name": "chest-ct-early",
        "trigger": "series",
        "conditions": [{"attribute": "modality", "value": "CT"}],
    }
]


def _complete_by_quiet_period(site: Site) -> None:
    later = utcnow() + timedelta(seconds=QUIET_PERIOD_S + 1)
    StudyAssembler(site.engine, QUIET_PERIOD_S).complete_quiet_studies(now=later)


def test_series_trigger_starts_when_its_series_reaches_images_in_acquisition(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with(rules=SERIES_RULE)
    # series 1: 12 thin slices, all sent; series 2: 20 announced, 10 sent so far
    study = make_study(tmp_path, [12, 20], images_in_acquisition=[12, 20])
    (first_uid, first), (_second_uid, second) = study.series.items()
    store(site.port, first[:11])
    assert site.router.trigger_complete_series() == []  # 11 of 12: not yet
    store(site.port, first[11:] + second[:10])
    made = site.router.trigger_complete_series()
    assert len(made) == 1
    [job] = site.jobs(study.study_uid)
    assert (job.state, job.series_instance_uid, job.generation) == ("queued", first_uid, 1)
    assert site.study(study.study_uid).state == "receiving"  # series 2 still arriving
    [triggered] = site.audit("series.triggered")
    assert triggered["signal"] == "Images in Acquisition"
    assert site.router.trigger_complete_series() == []  # once
    store(site.port, second[10:])
    _complete_by_quiet_period(site)
    assert site.router.route_complete_studies() == []  # series unchanged: not run again
    assert len(site.jobs(study.study_uid)) == 1


def test_a_late_instance_of_the_triggered_series_runs_the_rule_again(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with(rules=SERIES_RULE)
    study = make_study(tmp_path, [10], images_in_acquisition=[9])  # the sender undercounts
    [(series_uid, paths)] = study.series.items()
    store(site.port, paths[:9])
    assert len(site.router.trigger_complete_series()) == 1
    store(site.port, paths[9:])  # a late instance of the series the job ran on
    _complete_by_quiet_period(site)
    made = site.router.route_complete_studies()
    jobs = site.jobs(study.study_uid)
    assert [j.id for j in jobs[1:]] == made and len(jobs) == 2
    assert [j.generation for j in jobs] == [1, 2]
    assert jobs[1].series_instance_uid == series_uid
