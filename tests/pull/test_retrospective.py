"""Retrospective runs against Orthanc as the source PACS, through each transport: by
accession number, then by a date range and modality in batches of one study. Every instance
the source lists is stored as it was sent (same dataset bytes), each study is marked pulled
by its run and batch, the source served exactly those retrievals, and the studies go on
through the normal path (assembly, rules, jobs)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, select

from gateway.jobs.router import StudyRouter
from gateway.models import Job, PullRun
from gateway.pull.criteria import PullCriteria
from gateway.pull.ledger import batch_progress, create_run
from gateway.pull.retrospective import execute_run
from gateway.settings import GatewaySettings
from tests.conftest import RunningGateway
from tests.integration.dicom_factory import dataset_body
from tests.pull.conftest import (
    Sent,
    SourcePacs,
    all_audit_text,
    audit_rows,
    complete_all,
    pull_settings,
    pulled_rows,
    source_config,
    stored_files,
    stored_instances,
)
from tests.pull.studies import SourceStudy

TRANSPORTS = ["c-move", "c-get", "wado-rs"]
CHEST_CT = {
    "rules": [{"name": "chest-ct", "conditions": [{"attribute": "modality", "value": "CT"}]}],
    "series_selection": {"min_slices": 2},
}


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_runs_by_accession_number_and_by_date_range(
    transport: str,
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    source_studies: dict[str, SourceStudy],
    listening_gateway: RunningGateway,
) -> None:
    configured = pull_settings(settings, source_config(source_pacs, transport), routing=CHEST_CT)
    a, b, c = (source_studies[k] for k in "abc")
    before = source_pacs.retrievals()

    by_accession = PullCriteria(accession_numbers=["PULLACC-A"])
    run_1 = create_run(engine, by_accession, transport=transport, batch_size=1, requested_by="t")
    result = execute_run(configured, engine, run_1)
    assert result is not None and (result.pulled, result.failed) == (1, 0), result
    assert stored_instances(engine) == a.sop_instance_uids

    by_dates = PullCriteria(date_from="2025-06-01", date_to="20250603", modality="CT")
    run_2 = create_run(engine, by_dates, transport=transport, batch_size=1, requested_by="t")
    result = execute_run(configured, engine, run_2)
    assert result is not None and (result.pulled, result.failed) == (2, 0), result

    # Exactly A, B and C (not D, an MR study of the same days), each as the source sent it.
    expected = a.sop_instance_uids | b.sop_instance_uids | c.sop_instance_uids
    files = stored_files(engine, configured.spool_dir)
    assert set(files) == expected
    sent = {i.sop_instance_uid: i.data for s in (a, b, c) for i in s.instances}
    for uid, data in files.items():
        assert dataset_body(data) == dataset_body(sent[uid]), f"{uid} not stored as sent"

    # Marked pulled by run and batch; progress per batch.
    marks = {(r.study_instance_uid, r.run_id, r.batch, r.state) for r in pulled_rows(engine)}
    assert (a.study_instance_uid, run_1, 1, "pulled") in marks
    assert {m[0] for m in marks if m[1] == run_2} == {b.study_instance_uid, c.study_instance_uid}
    assert {m[3] for m in marks} == {"pulled"} and len(marks) == 3
    with engine.connect() as connection:
        batches = [
            (p.batch, p.studies, p.pulled, p.failed) for p in batch_progress(connection, run_2)
        ]
    assert batches == [(1, 1, 1, 0), (2, 1, 1, 0)]

    # The source served one retrieval per study, by this transport only.
    after = source_pacs.retrievals()
    served = {k: after[k] - before[k] for k in after}
    assert served == {t: (3 if t == transport else 0) for t in TRANSPORTS}, served

    # The normal path: complete after the quiet period, then routed by the rules to jobs.
    assert set(complete_all(engine)) == {s.study_instance_uid for s in (a, b, c)}
    router = StudyRouter(configured, engine, Sent())
    router.seed()
    assert len(router.route_complete_studies()) == 3
    with engine.connect() as connection:
        jobs = connection.execute(select(Job.study_instance_uid, Job.rule_name)).all()
    assert sorted(jobs) == sorted((s.study_instance_uid, "chest-ct") for s in (a, b, c))

    pulled_events = audit_rows(engine, "pull.study_pulled")
    assert {e.detail["transport"] for e in pulled_events} == {transport}
    assert len(pulled_events) == 3
    text = all_audit_text(engine)
    for identifier in ("PULLACC-A", a.patient_id, b.patient_id, c.patient_id):
        assert identifier not in text, f"{identifier} in the audit log"


def test_a_run_stopped_midway_resumes_where_it_was(
    settings: GatewaySettings,
    engine: Engine,
    source_pacs: SourcePacs,
    source_studies: dict[str, SourceStudy],
) -> None:
    """The gateway shuts down mid-run: the run is queued again, and the next puller fetches
    only the studies not tried yet (its accession numbers were dropped once resolved)."""
    configured = pull_settings(settings, source_config(source_pacs, "c-get"))
    b, c = source_studies["b"], source_studies["c"]
    criteria = PullCriteria(accession_numbers=[b.accession_number, c.accession_number])
    run_id = create_run(engine, criteria, transport="c-get", batch_size=1, requested_by="t")
    stop = threading.Event()
    first = execute_run(configured, engine, run_id, stop=stop, on_study=lambda *_: stop.set())
    assert first is not None and (first.stopped, first.pulled) == (True, 1)
    with engine.connect() as connection:
        assert connection.execute(select(PullRun.state)).scalar_one() == "queued"
    before = source_pacs.retrievals()["c-get"]
    again = execute_run(configured, engine)  # the oldest queued run: this one
    assert again is not None and (again.run_id, again.pulled, again.failed) == (run_id, 1, 0)
    assert source_pacs.retrievals()["c-get"] == before + 1  # only the study not tried yet
    assert stored_instances(engine) == b.sop_instance_uids | c.sop_instance_uids
    with engine.connect() as connection:
        run = connection.execute(select(PullRun)).one()
    assert (run.state, run.studies_total, run.studies_pulled) == ("done", 2, 2)
