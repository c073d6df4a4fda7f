"""Storage Commitment Push Model (PS3.4 J): the modality simulator (pynetdicom SCU; DCMTK
has no storage commitment SCU) asks about stored, missing and class-mismatched instances and
receives the N-EVENT-REPORT on its own association, or on one the gateway opens to the
address configured for its AE. The list is also a completion signal. Restart in between:
the report is still sent. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydicom.uid import MRImageStorage, generate_uid
from sqlalchemy import select

from gateway.models import StorageCommitment
from tests.completion.conftest import Site
from tests.completion.modality import (
    MODALITY_AE,
    Reports,
    commitment_association,
    commitment_request,
    make_study,
    n_action,
    report_listener,
    store,
)
from tests.conftest import free_port


def _failed(info: object) -> dict[str, int]:
    return {str(i.ReferencedSOPInstanceUID): int(i.FailureReason) for i in info.FailedSOPSequence}  # type: ignore[attr-defined]


def test_all_stored_is_event_type_1_on_the_same_association_and_completes_the_study(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with()
    study = make_study(tmp_path, [5])
    [(series_uid, paths)] = study.series.items()
    store(site.port, paths)
    reports = Reports()
    transaction = generate_uid()
    with commitment_association(site.port, reports) as assoc:
        assert n_action(assoc, commitment_request(transaction, study.listed()[series_uid])) == 0
        event_type, info, where = reports.wait(timeout_s=10)
        assert site.wait_reported() == ["reported"]
    assert (event_type, where) == (1, "same association")
    assert str(info.TransactionUID) == transaction
    assert sorted(str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence) == sorted(
        study.sop_uids[p] for p in paths
    )
    assert "FailedSOPSequence" not in info
    assert site.wait_complete(study.study_uid, timeout_s=5) < 5  # the list is a signal too
    assert site.study(study.study_uid).completed_by == "storage commitment"


def test_missing_and_mismatched_class_are_failures(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    site = site_with()
    study = make_study(tmp_path, [3])
    [(series_uid, paths)] = study.series.items()
    store(site.port, paths)
    listed = study.listed()[series_uid]
    missing = (listed[0][0], generate_uid())
    mismatched = (str(MRImageStorage), listed[1][1])  # stored as CT, asked about as MR
    request = commitment_request(generate_uid(), [listed[0], listed[2], missing, mismatched])
    reports = Reports()
    with commitment_association(site.port, reports) as assoc:
        assert n_action(assoc, request) == 0
        event_type, info, where = reports.wait(timeout_s=10)  # after commitment_wait_s (1 s)
        assert site.wait_reported() == ["reported"]
    assert (event_type, where) == (2, "same association")
    assert sorted(str(i.ReferencedSOPInstanceUID) for i in info.ReferencedSOPSequence) == sorted(
        [listed[0][1], listed[2][1]]
    )
    assert _failed(info) == {missing[1]: 0x0112, mismatched[1]: 0x0119}
    assert site.study(study.study_uid).state == "receiving"  # not all listed: no signal


def test_unknown_only_and_bad_requests(site_with: Callable[..., Site], tmp_path: Path) -> None:
    site = site_with()
    unknown = [(str(MRImageStorage), generate_uid())]
    reports = Reports()
    with commitment_association(site.port, reports) as assoc:
        assert n_action(assoc, commitment_request(generate_uid(), [])) == 0x0120
        assert n_action(assoc, commitment_request(generate_uid(), unknown)) == 0
        event_type, info, _ = reports.wait(timeout_s=10)
        assert site.wait_reported() == ["reported"]
    assert event_type == 2 and "ReferencedSOPSequence" not in info
    assert _failed(info) == {unknown[0][1]: 0x0112}
    assert [d["status"] for d in site.audit("commitment.refused")] == ["0x0120"]


def test_report_on_a_new_association_to_the_configured_peer(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    report_port = free_port()
    site = site_with(
        report_peers=[{"ae_title": MODALITY_AE, "host": "127.0.0.1", "port": report_port}]
    )
    study = make_study(tmp_path, [4])
    [(series_uid, paths)] = study.series.items()
    store(site.port, paths[:3])
    reports = Reports()
    transaction = generate_uid()
    with report_listener(report_port, reports):
        with commitment_association(site.port, reports) as assoc:
            # the fourth is still "in flight": nothing can be answered before we release
            assert n_action(assoc, commitment_request(transaction, study.listed()[series_uid])) == 0
        store(site.port, paths[3:])
        event_type, info, where = reports.wait(timeout_s=10)
    assert (event_type, where) == (1, "new association")
    assert len(info.ReferencedSOPSequence) == 4
    [reported] = site.audit("commitment.reported")
    assert reported["via"] == "new association" and reported["committed"] == 4


def test_a_restart_before_the_report_still_sends_it(
    site_with: Callable[..., Site], tmp_path: Path
) -> None:
    report_port = free_port()
    peers = [{"ae_title": MODALITY_AE, "host": "127.0.0.1", "port": report_port}]
    site = site_with(report_peers=peers, commitment_wait_s=3.0)
    study = make_study(tmp_path, [2])
    [(series_uid, paths)] = study.series.items()
    store(site.port, paths)
    request = commitment_request(
        generate_uid(),
        [*study.listed()[series_uid], (paths and study.listed()[series_uid][0][0], generate_uid())],
    )
    with commitment_association(site.port, Reports()) as assoc:
        assert n_action(assoc, request) == 0
    site.gateway.stop()  # before commitment_wait_s ends: nothing was reported
    with site.engine.connect() as connection:
        assert connection.execute(select(StorageCommitment.state)).scalars().all() == ["waiting"]
    reports = Reports()
    with report_listener(report_port, reports):
        site_with(report_peers=peers, commitment_wait_s=3.0)  # a new gateway, same database
        event_type, info, where = reports.wait(timeout_s=30)
    assert (event_type, where) == (2, "new association")
    assert len(info.ReferencedSOPSequence) == 2 and len(info.FailedSOPSequence) == 1
