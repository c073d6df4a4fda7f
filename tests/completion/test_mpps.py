"""MPPS (PS3.4 F) as the completion signal: a modality simulator (pynetdicom SCU) stores a
study and reports it COMPLETED; the study completes in seconds although the quiet period is
300 s. A listed instance that never comes, or DISCONTINUED, leaves it to the quiet period.
Real listener, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from pydicom.uid import generate_uid

from gateway.assembly import StudyAssembler
from gateway.audit import utcnow
from tests.completion.conftest import QUIET_PERIOD_S, Site
from tests.completion.modality import make_study, mpps_association, n_create, n_set, store
from tests.scu import association


def test_mpps_completed_starts_the_job_without_the_quiet_period(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with()
    study = make_study(tmp_path, [12, 3])
    for paths in study.series.values():
        store(site.port, paths)
    mpps_uid = generate_uid()
    with mpps_association(site.port) as assoc:
        assert n_create(assoc, mpps_uid, study.study_uid) == 0x0000
        assert site.study(study.study_uid).state == "receiving"
        assert n_set(assoc, mpps_uid, "COMPLETED", study.listed()) == (0x0000, "")
    waited = site.wait_complete(study.study_uid, timeout_s=5)
    assert waited < QUIET_PERIOD_S / 10
    row = site.study(study.study_uid)
    assert row.completed_by == "MPPS"
    assert [d["signal"] for d in site.audit("study.complete")] == ["MPPS"]
    # the gateway's own router polls every hour here: only the signal's wake-up makes the
    # job within seconds
    jobs = site.wait_jobs(study.study_uid, timeout_s=5)
    assert [j.state for j in jobs] == ["queued"]
    assert jobs[0].series_instance_uid == next(iter(study.series))  # the 12-slice series
    assert site.router.route_complete_studies() == []  # routed once


def test_instances_after_the_mpps_complete_the_study_when_the_last_arrives(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with()
    study = make_study(tmp_path, [10])
    paths = next(iter(study.series.values()))
    mpps_uid = generate_uid()
    with mpps_association(site.port) as assoc:
        assert n_create(assoc, mpps_uid, study.study_uid) == 0x0000
        assert n_set(assoc, mpps_uid, "COMPLETED", study.listed())[0] == 0x0000
    store(site.port, paths[:9])
    assert site.study(study.study_uid).state == "receiving"
    store(site.port, paths[9:])
    assert site.wait_complete(study.study_uid, timeout_s=5) < 5


def test_a_listed_instance_that_never_arrives_waits_for_the_quiet_period(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with()
    study = make_study(tmp_path, [10])
    paths = next(iter(study.series.values()))
    store(site.port, paths[:9])  # the tenth is lost
    mpps_uid = generate_uid()
    with mpps_association(site.port) as assoc:
        assert n_create(assoc, mpps_uid, study.study_uid) == 0x0000
        assert n_set(assoc, mpps_uid, "COMPLETED", study.listed())[0] == 0x0000
    StudyAssembler(site.engine, QUIET_PERIOD_S).complete_signalled_studies()
    assert site.study(study.study_uid).state == "receiving"
    assert site.router.route_complete_studies() == []
    page = site.study_page(study.study_uid)
    assert "MPPS COMPLETED lists 10 instances, 9 stored; waiting for the quiet period" in page
    # the fallback: the quiet period still completes it
    later = utcnow() + timedelta(seconds=QUIET_PERIOD_S + 1)
    assert StudyAssembler(site.engine, QUIET_PERIOD_S).complete_quiet_studies(now=later) == [
        study.study_uid
    ]
    assert site.study(study.study_uid).completed_by == "quiet period"
    assert len(site.router.route_complete_studies()) == 1


def test_discontinued_falls_back_to_the_quiet_period_with_the_reason(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with()
    study = make_study(tmp_path, [6])
    store(site.port, next(iter(study.series.values())))
    mpps_uid = generate_uid()
    with mpps_association(site.port) as assoc:
        assert n_create(assoc, mpps_uid, study.study_uid) == 0x0000
        status = n_set(assoc, mpps_uid, "DISCONTINUED", study.listed(), reason="Equipment failure")
        assert status[0] == 0x0000
    StudyAssembler(site.engine, QUIET_PERIOD_S).complete_signalled_studies()
    assert site.study(study.study_uid).state == "receiving"
    [updated] = [d for d in site.audit("mpps.updated") if d["status"] == "DISCONTINUED"]
    assert updated["reason"] == "Equipment failure (110514)"
    assert "MPPS DISCONTINUED (Equipment failure (110514))" in site.study_page(study.study_uid)


def test_mpps_statuses_follow_ps3_4(site_with: Callable[..., Site], tmp_path: Path) -> None:
    site = site_with()
    study_uid, mpps_uid = generate_uid(), generate_uid()
    with mpps_association(site.port) as assoc:
        assert n_set(assoc, generate_uid(), "COMPLETED")[0] == 0x0112  # no such instance
        assert n_create(assoc, generate_uid(), study_uid, status="COMPLETED") == 0x0106
        assert n_create(assoc, mpps_uid, study_uid) == 0x0000
        assert n_create(assoc, mpps_uid, study_uid) == 0x0111  # duplicate
        assert n_set(assoc, mpps_uid, "IN PROGRESS")[0] == 0x0000
        assert n_set(assoc, mpps_uid, "COMPLETED")[0] == 0x0000
        status, comment = n_set(assoc, mpps_uid, "DISCONTINUED")
        assert status == 0x0110
        assert comment == "MPPS may no longer be updated: it is COMPLETED"
    refused = site.audit("mpps.refused")
    assert [r["status"] for r in refused] == ["0x0112", "0x0106", "0x0111", "0x0110"]


def test_mpps_from_a_peer_not_allowed_is_rejected(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with()
    with association(site.port, calling_ae="INTRUDER", bind_address="127.0.0.2") as assoc:
        assert not assoc.is_established
    assert site.audit("mpps.created") == []


def test_a_restart_between_the_mpps_and_the_last_instance_loses_nothing(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with()
    study = make_study(tmp_path, [8])
    paths = next(iter(study.series.values()))
    store(site.port, paths[:7])
    mpps_uid = generate_uid()
    with mpps_association(site.port) as assoc:
        assert n_create(assoc, mpps_uid, study.study_uid) == 0x0000
        assert n_set(assoc, mpps_uid, "COMPLETED", study.listed())[0] == 0x0000
    site.gateway.stop()  # listener and assembly threads end; only the database remains
    restarted = site_with()  # a new gateway on the same database and spool
    assert restarted.study(study.study_uid).state == "receiving"
    store(restarted.port, paths[7:])
    assert restarted.wait_complete(study.study_uid, timeout_s=5) < 5
    assert restarted.study(study.study_uid).completed_by == "MPPS"
