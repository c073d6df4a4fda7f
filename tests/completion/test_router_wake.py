"""The gateway's router routes a study as soon as it is complete, not at its next poll: here
it polls every hour, so a job within seconds proves the wake-up, whether the assembly pass
or a listener process completed the study. Real listener, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydicom.uid import generate_uid

from gateway.completion.signals import QUIET_PERIOD_SIGNAL
from tests.completion.conftest import Site
from tests.completion.modality import make_study, mpps_association, n_create, n_set, store


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


def test_an_mpps_settled_in_a_listener_process_wakes_the_router(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    # two listener processes; the assembly pass (in the main process) looks once an hour,
    # so only the listener process's own check settles the MPPS
    site = site_with(listener_processes=2, assembly_poll_s=3600)
    study = make_study(tmp_path, [5])
    for paths in study.series.values():
        store(site.port, paths)
    mpps_uid = generate_uid()
    with mpps_association(site.port) as assoc:
        assert n_create(assoc, mpps_uid, study.study_uid) == 0x0000
        assert n_set(assoc, mpps_uid, "COMPLETED", study.listed()) == (0x0000, "")
    site.wait_complete(study.study_uid, timeout_s=10)
    assert site.study(study.study_uid).completed_by == "MPPS"
    jobs = site.wait_jobs(study.study_uid, timeout_s=5)
    assert [job.rule_name for job in jobs] == ["chest-ct"]
