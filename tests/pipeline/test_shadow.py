"""Shadow mode end to end: Orthanc sends a phantom study to the gateway, whose rule runs the
lung nodule pipeline and, in shadow, a candidate version of it (its pipeline file under
another name and version). The PACS receives exactly the primary's SEG and SR, counted in
Orthanc's log of what it received (every C-STORE, duplicates included), none of the
shadow's; the shadow's results are stored and compared with the primary's.
Real PostgreSQL, Redis, Triton, Orthanc, gateway and Celery worker processes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.models import JobState, ShadowComparison
from tests.conftest import GATEWAY_AE
from tests.integration.orthanc import Orthanc
from tests.monitoring.test_shadow_jobs import CANDIDATE, candidate_pipelines
from tests.pipeline.conftest import (
    GATEWAY_IN_ORTHANC,
    Pipeline,
    orthanc_destination,
    phantom_study,
)
from tests.pipeline.harness import (
    assert_received_once,
    audit_kinds_of_study,
    jobs,
    settled,
    wait_until,
)
from tests.pipeline.test_end_to_end import upload
from workers.triton_server import TritonServer


def test_the_pacs_receives_the_primary_results_only(
    pacs: Orthanc,
    triton: TritonServer,
    start_pipeline: Callable[..., Pipeline],
    tmp_path: Path,
) -> None:
    pipeline = start_pipeline(
        triton.grpc_url,
        [orthanc_destination(pacs)],
        pipelines={"dirs": [str(candidate_pipelines(tmp_path / "pipelines"))]},
        routing={
            "rules": [
                {
                    "name": "chest-ct",
                    "conditions": [{"attribute": "modality", "value": "CT"}],
                    "pipeline": "lung_nodules",
                    "shadow_pipeline": CANDIDATE,
                }
            ],
            "series_selection": {"min_slices": 4},
        },
    )
    _phantom, paths = phantom_study(tmp_path / "ct", seed=7115)
    study_id = upload(pacs, paths)
    study_uid = pacs.get_json(f"/studies/{study_id}")["MainDicomTags"]["StudyInstanceUID"]
    pacs.set_modality(GATEWAY_IN_ORTHANC, GATEWAY_AE, "127.0.0.1", pipeline.settings.dicom.port)
    assert pacs.store(GATEWAY_IN_ORTHANC, [study_id]).status == 200

    try:
        wait_until(
            lambda: (
                len(rows := jobs(pipeline.engine)) == 2
                and {j.state for j in rows}
                <= {JobState.DELIVERED, JobState.STORED, JobState.FAILED}
                and rows
            ),
            180,
            "both jobs finished",
        )
        wait_until(lambda: settled(pipeline.engine, pipeline.redis), 30, "nothing left to send")
    except AssertionError:
        pytest.fail(f"jobs {jobs(pipeline.engine)}\n{pipeline.logs()}")
    primary, shadow = jobs(pipeline.engine)
    assert (primary.pipeline, primary.state) == ("lung_nodules", JobState.DELIVERED), (
        primary.last_error
    )
    assert (shadow.pipeline, shadow.state, shadow.shadow_of) == (
        CANDIDATE,
        JobState.STORED,
        primary.id,
    ), shadow.last_error

    # What the PACS received: the primary's SEG and SR, once each, and nothing else.
    assert_received_once(pacs, study_uid)
    received = {r.sop_instance_uid for r in pacs.received(study_uid)}
    primary_uids = {r["sop_instance_uid"] for r in primary.summary["results"]}
    shadow_uids = {r["sop_instance_uid"] for r in shadow.summary["results"]}
    assert received == primary_uids
    assert len(shadow_uids) == 2 and not shadow_uids & received
    for result in shadow.summary["results"]:  # built and stored all the same
        assert (pipeline.settings.results_dir / result["relative_path"]).is_file()

    with pipeline.engine.connect() as connection:
        comparison = connection.execute(select(ShadowComparison)).one()
    assert comparison.primary_job_id == primary.id and comparison.shadow_job_id == shadow.id
    assert comparison.findings_agree is True  # the same models on the same series
    assert comparison.mean_dice is not None and comparison.mean_dice > 0.9, comparison.segments
    kinds = audit_kinds_of_study(pipeline.engine, study_uid)
    for step in ("shadow.job_queued", "shadow.job_stored", "shadow.compared"):
        assert kinds.count(step) == 1, (step, sorted(set(kinds)))
    assert kinds.count("delivery.delivered") == 2
