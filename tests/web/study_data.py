"""A stored study for the web tests, made through the gateway's own code paths: phantom CT
files, the spool, the instance index and the study assembler; then a job row, its findings
file (the phantom's labels) and delivery rows as a worker would leave them."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine, insert, select

from gateway.assembly import StudyAssembler
from gateway.audit import AuditKind, Outcome, audit_row, record, utcnow
from gateway.dicom.header import read_header
from gateway.dicom.spool import Spool
from gateway.ingest import InstanceIndex, Sender
from gateway.models import Delivery, DeliveryState, Job, JobState, Study
from gateway.phantom import make_phantom, write_ct_series
from gateway.settings import GatewaySettings
from workers.inference.findings import Findings, ModelIdentity
from workers.jobs.findings_store import save_findings

PATIENT_NAME = "PHANTOM^7"  # what write_ct_series writes for seed 7
PATIENT_ID = "PH7"


@dataclass(frozen=True)
class StoredStudy:
    study_uid: str
    series_uid: str
    job_id: int
    failed_job_id: int


def _split(path: Path) -> tuple[bytes, bytes]:
    """File meta and dataset body, as the listener receives them."""
    data = path.read_bytes()
    (group_length,) = struct.unpack("<I", data[140:144])
    end = 144 + group_length
    return data[:end], data[end:]


def store_study(settings: GatewaySettings, engine: Engine, work: Path) -> StoredStudy:
    phantom = make_phantom(
        7, shape=(20, 160, 160), spacing=(3.0, 2.2, 2.2), n_nodules=1, nodule_diameter_mm=(14, 18)
    )
    paths = write_ct_series(phantom, work / "ct")
    spool = Spool(settings.spool_dir, min_free_bytes=0, fsync=False)
    index = InstanceIndex(engine)
    header = None
    for path in paths:
        meta, body = _split(path)
        header = read_header(body, "1.2.840.10008.1.2.1")
        spooled = spool.write(
            header.study_instance_uid,
            header.series_instance_uid,
            header.sop_instance_uid,
            (meta, body),
        )
        index.record_instance(header, spooled, Sender("MODALITY", "127.0.0.1"))
    assert header is not None
    StudyAssembler(engine, 0.001).complete_quiet_studies(now=utcnow() + timedelta(seconds=5))
    sop_uids = tuple(
        read_header(_split(p)[1], "1.2.840.10008.1.2.1").sop_instance_uid for p in paths
    )
    now = utcnow()
    with engine.begin() as connection:
        study_id = connection.execute(
            select(Study.id).where(Study.study_instance_uid == header.study_instance_uid)
        ).scalar_one()
        common = {
            "study_id": study_id,
            "study_instance_uid": header.study_instance_uid,
            "rule_name": "chest-ct",
            "pipeline": "lung_nodules",
            "series_instance_uid": header.series_instance_uid,
            "destinations": ["pacs"],
            "priority": "routine",
            "created_at": now - timedelta(seconds=30),
            "updated_at": now,
        }
        job_id = connection.execute(
            insert(Job)
            .values(
                **common,
                generation=1,
                model_key="lung_nodule_unet:1,nodule_cnn:1",
                state=JobState.DELIVERED,
                attempts=1,
                enqueued_at=now - timedelta(seconds=29),
                started_at=now - timedelta(seconds=28),
                inferred_at=now - timedelta(seconds=20),
                results_built_at=now - timedelta(seconds=15),
                delivered_at=now - timedelta(seconds=10),
                finished_at=now - timedelta(seconds=10),
                stage_seconds={"queue_wait": 1.0, "inference": 6.5, "results_build": 5.0},
                summary={
                    "nodule_count": 1,
                    "nodules": [{"index": 1, "volume_mm3": 1234.5, "longest_diameter_mm": 14.2}],
                    "nodule_probability": 0.9731,
                    "lung_volume_mm3": 4567890.1,
                    "segmentation_model": "lung_nodule_unet:1",
                    "classification_model": "nodule_cnn:1",
                    "runner": "triton",
                    "results": [],
                },
            )
            .returning(Job.id)
        ).scalar_one()
        failed_job_id = connection.execute(
            insert(Job)
            .values(
                **common,
                generation=1,
                model_key="lung_nodule_unet:2,nodule_cnn:2",
                state=JobState.FAILED,
                attempts=3,
                last_error="Triton unavailable after 3 attempts",
                finished_at=now,
            )
            .returning(Job.id)
        ).scalar_one()
        for number, (state, error) in enumerate(
            [(DeliveryState.DELIVERED, None), (DeliveryState.FAILED, "association rejected")]
        ):
            connection.execute(
                insert(Delivery).values(
                    destination="pacs",
                    study_instance_uid=header.study_instance_uid,
                    series_instance_uid=f"2.25.{number + 1}",
                    sop_instance_uid=f"2.25.{number + 11}",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                    kind="seg" if number == 0 else "sr",
                    file_path=f"x/{number}.dcm",
                    state=state,
                    attempts=1,
                    last_error=error,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                    delivered_at=now if state == DeliveryState.DELIVERED else None,
                )
            )
            if state == DeliveryState.FAILED:  # as the deliverer records it
                record(
                    connection,
                    audit_row(
                        AuditKind.DELIVERY_FAILED,
                        actor="delivery",
                        study_instance_uid=header.study_instance_uid,
                        sop_instance_uid=f"2.25.{number + 11}",
                        outcome=Outcome.FAILURE,
                        detail={"destination": "pacs", "reason": error},
                    ),
                )
    identity = ModelIdentity("lung_nodule_unet", "1")
    save_findings(
        Findings(
            labels=phantom.labels,
            sop_instance_uids=sop_uids,
            study_instance_uid=header.study_instance_uid,
            series_instance_uid=header.series_instance_uid,
            frame_of_reference_uid=header.frame_of_reference_uid or "",
            nodules=[],
            nodule_probability=0.9731,
            segmentation_model=identity,
            classification_model=ModelIdentity("nodule_cnn", "1"),
            runner="triton",
        ),
        settings.jobs_dir / str(job_id) / "findings.npz",
    )
    return StoredStudy(header.study_instance_uid, header.series_instance_uid, job_id, failed_job_id)
