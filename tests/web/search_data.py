"""Studies for the search and bulk retry tests, made through the gateway's own paths: phantom
CT series and radiographs written as DICOM files, stored by the instance store that C-STORE
and STOW-RS share (so the keyed hashes of Accession Number and Patient ID are set as at
ingest), completed by the study assembler; then job rows whose findings summaries come from
the worker's own `summarise` on real findings objects."""

from __future__ import annotations

import datetime as dt
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from sqlalchemy import Engine, func, insert, select

from gateway.assembly import StudyAssembler
from gateway.audit import utcnow
from gateway.dicom.spool import Spool
from gateway.dicom.store_instance import InstanceStore
from gateway.ingest import Sender
from gateway.models import Instance, Job, JobState, Series, Study
from gateway.patient_index import PatientIndex
from gateway.phantom import make_phantom, write_ct_series
from gateway.phantom.radiograph import make_radiograph
from gateway.phantom.radiograph_dicom import write_radiograph
from gateway.pipelines.findings import (
    ImageFinding,
    Measurement,
    ModelIdentity,
    PipelineFindings,
    PointFinding,
    SegmentFinding,
)
from gateway.settings import GatewaySettings
from workers.inference.findings import Findings, NoduleFinding
from workers.jobs.findings_store import summarise

EXPLICIT_LE = "1.2.840.10008.1.2.1"


def _split(path: Path) -> tuple[bytes, bytes]:
    """File meta and dataset body, as a transport hands them to the store."""
    data = path.read_bytes()
    (group_length,) = struct.unpack("<I", data[140:144])
    end = 144 + group_length
    return data[:end], data[end:]


def _set_patient_id(paths: Sequence[Path], patient_id: str) -> None:
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PatientID = patient_id
        ds.save_as(path, enforce_file_format=True)


def ct_files(
    work: Path,
    seed: int,
    *,
    accession: str = "",
    study_date: dt.date = dt.date(2024, 1, 1),
    patient_id: str | None = None,
) -> list[Path]:
    """A small chest CT phantom (4 slices); Patient ID PH<seed> unless given."""
    phantom = make_phantom(seed, shape=(4, 32, 32), spacing=(3.0, 8.0, 8.0), n_nodules=0)
    paths = write_ct_series(
        phantom,
        work / f"ct{seed}",
        accession_number=accession,
        study_datetime=dt.datetime.combine(study_date, dt.time(8, 0)),
    )
    if patient_id is not None:
        _set_patient_id(paths, patient_id)
    return paths


def dx_file(
    work: Path,
    seed: int,
    *,
    accession: str = "",
    study_date: dt.date = dt.date(2024, 1, 1),
    patient_id: str | None = None,
) -> list[Path]:
    """One chest radiograph (DX); Patient ID XR<seed> unless given."""
    radiograph = make_radiograph(
        seed, view_position="PA", n_nodules=0, long_side_px=128, noise=False
    )
    path = write_radiograph(
        radiograph,
        work / f"dx{seed}.dcm",
        accession_number=accession,
        study_datetime=dt.datetime.combine(study_date, dt.time(9, 0)),
    )
    if patient_id is not None:
        _set_patient_id([path], patient_id)
    return [path]


def ingest(
    settings: GatewaySettings, engine: Engine, paths: Sequence[Path], calling_ae: str
) -> str:
    """Store the files as a C-STORE from `calling_ae` would, complete the study; its UID."""
    store = InstanceStore(
        engine,
        Spool(settings.spool_dir, min_free_bytes=0, fsync=False),
        patient_index=PatientIndex.from_settings(settings),
    )
    study_uid = ""
    for path in paths:
        meta, body = _split(path)
        outcome = store.receive(
            Sender(calling_ae, "127.0.0.1"),
            meta,
            memoryview(body),
            EXPLICIT_LE,
            expected_sop_class_uid=None,
            announced_sop_instance_uid=None,
            transport="test",
        )
        assert outcome.stored, outcome.reason
        assert outcome.header is not None
        study_uid = outcome.header.study_instance_uid
    StudyAssembler(engine, 0.001).complete_quiet_studies(now=utcnow() + dt.timedelta(seconds=5))
    return study_uid


def last_received(engine: Engine, study_uid: str) -> dt.datetime:
    with engine.connect() as connection:
        value = connection.execute(
            select(func.max(Instance.received_at))
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
            .where(Study.study_instance_uid == study_uid)
        ).scalar_one()
    assert value is not None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def add_job(
    engine: Engine,
    study_uid: str,
    *,
    rule: str = "chest-ct",
    pipeline: str = "lung_nodules",
    state: JobState = JobState.DELIVERED,
    summary: dict[str, Any] | None = None,
    turnaround_s: float | None = None,
    generation: int = 1,
    model_key: str = "m:1",
) -> int:
    """A job row as a worker leaves it; delivered `turnaround_s` after the last instance."""
    received = last_received(engine, study_uid)
    created = received + dt.timedelta(milliseconds=1)
    delivered = None if turnaround_s is None else received + dt.timedelta(seconds=turnaround_s)
    with engine.begin() as connection:
        study_id, series_uid = connection.execute(
            select(Study.id, Series.series_instance_uid)
            .join(Series, Series.study_id == Study.id)
            .where(Study.study_instance_uid == study_uid)
            .limit(1)
        ).one()
        job_id: int = connection.execute(
            insert(Job)
            .values(
                study_id=study_id,
                study_instance_uid=study_uid,
                generation=generation,
                rule_name=rule,
                pipeline=pipeline,
                model_key=model_key,
                series_instance_uid=series_uid,
                destinations=["pacs"],
                priority="routine",
                state=state,
                attempts=1,
                last_error="Triton unavailable after 3 attempts"
                if state == JobState.FAILED
                else None,
                summary=summary,
                created_at=created,
                updated_at=created,
                delivered_at=delivered,
                finished_at=delivered or (created if state == JobState.FAILED else None),
            )
            .returning(Job.id)
        ).scalar_one()
    return job_id


# --- findings summaries, as the worker writes them ------------------------------------------

_LABELS = np.zeros((1, 4, 4), dtype=np.uint8)


def lung_summary(nodules: int, probability: float) -> dict[str, Any]:
    """The lung nodule pipeline's form (its own `Findings`)."""
    found = [
        NoduleFinding(
            index=i + 1,
            voxel_count=40,
            volume_mm3=500.0,
            longest_diameter_mm=9.5,
            centroid_patient_mm=(0.0, 0.0, 0.0),
            centroid_index=(0.0, 1.0, 1.0),
            slice_range=(0, 0),
        )
        for i in range(nodules)
    ]
    findings = Findings(
        labels=_LABELS,
        sop_instance_uids=("2.25.1",),
        study_instance_uid="2.25.2",
        series_instance_uid="2.25.3",
        frame_of_reference_uid="2.25.4",
        nodules=found,
        nodule_probability=probability,
        segmentation_model=ModelIdentity("lung_nodule_unet", "1"),
        classification_model=ModelIdentity("nodule_cnn", "1"),
        runner="triton",
    )
    return dict(summarise(findings))


def generic_summary(
    *,
    image: Sequence[tuple[str, float, bool]] = (),
    points: int = 0,
    components: int = 0,
    pipeline: str = "chest_xray_nodule",
) -> dict[str, Any]:
    """Every other pipeline's form: image-level findings (name, probability, present),
    point findings, a whole-label segment and `components` component segments."""
    segments = [
        SegmentFinding(
            label=1,
            name="lung",
            index=0,
            component_label=0,
            voxel_count=100,
            measurements=(Measurement("volume", 1000.0, "mm3"),),
        )
    ] + [
        SegmentFinding(
            label=2,
            name="nodule",
            index=i + 1,
            component_label=i + 1,
            voxel_count=10,
            measurements=(Measurement("volume", 50.0, "mm3"),),
        )
        for i in range(components)
    ]
    findings = PipelineFindings(
        pipeline=pipeline,
        labels=_LABELS,
        sop_instance_uids=("2.25.1",),
        study_instance_uid="2.25.2",
        series_instance_uid="2.25.3",
        frame_of_reference_uid="2.25.4",
        segments=tuple(segments),
        image_findings=tuple(ImageFinding(n, p, present) for n, p, present in image),
        models=(ModelIdentity("m", "1"),),
        runner="triton",
        point_findings=tuple(
            PointFinding("nodule", i + 1, "2.25.1", 10.0, 10.0, 5.0, 0.8) for i in range(points)
        ),
    )
    return dict(summarise(findings))


# --- the corpus the search tests and the browser test share --------------------------------


@dataclass(frozen=True)
class Corpus:
    uids: dict[str, str]  # key -> Study Instance UID
    jobs: dict[str, int]  # name -> job id

    def keys(self, uids: set[str]) -> set[str]:
        by_uid = {v: k for k, v in self.uids.items()}
        return {by_uid[u] for u in uids}


def build_corpus(settings: GatewaySettings, engine: Engine, work: Path) -> Corpus:
    """Five studies (A-E), one patient (PAT-1) has two (A, B); jobs of three pipelines with
    every verdict, a failed one, and turnarounds from seconds to an hour."""
    day = dt.date
    uids = {
        "A": ingest(
            settings,
            engine,
            ct_files(
                work, 1, accession="ACC-1001", study_date=day(2024, 1, 10), patient_id="PAT-1"
            ),
            "CT_SCANNER",
        ),
        "B": ingest(
            settings,
            engine,
            ct_files(
                work, 2, accession="ACC-1002", study_date=day(2024, 2, 15), patient_id="PAT-1"
            ),
            "CT_SCANNER",
        ),
        "C": ingest(
            settings,
            engine,
            dx_file(
                work, 11, accession="ACC-2001", study_date=day(2024, 2, 20), patient_id="PAT-2"
            ),
            "XR_ROOM",
        ),
        "D": ingest(
            settings,
            engine,
            ct_files(work, 3, accession="ACC-1003", study_date=day(2024, 3, 1), patient_id="PAT-3"),
            "CT_OTHER",
        ),
        "E": ingest(
            settings,
            engine,
            dx_file(work, 12, accession="ACC-2002", study_date=day(2024, 3, 5), patient_id="PAT-4"),
            "XR_ROOM",
        ),
    }
    xr: dict[str, Any] = {"rule": "chest-xr", "pipeline": "chest_xray_nodule"}
    jobs = {
        # 1 nodule, p 0.97: positive
        "A": add_job(engine, uids["A"], summary=lung_summary(1, 0.97), turnaround_s=42.5),
        # no nodule, p 0.10 (threshold 0.5): negative
        "B": add_job(engine, uids["B"], summary=lung_summary(0, 0.10), turnaround_s=125.0),
        # image finding present and a point: positive
        "C": add_job(
            engine,
            uids["C"],
            **xr,
            summary=generic_summary(image=[("nodule", 0.91, True)], points=1),
            turnaround_s=8.0,
        ),
        # failed before inference: no findings, neither verdict
        "D-failed": add_job(engine, uids["D"], state=JobState.FAILED),
        # no nodule but p 0.70 at or above the pipeline's threshold 0.5: positive
        "D": add_job(
            engine,
            uids["D"],
            summary=lung_summary(0, 0.70),
            turnaround_s=3725.0,
            model_key="m:2",
        ),
        # absent, no point: negative
        "E": add_job(
            engine,
            uids["E"],
            **xr,
            summary=generic_summary(image=[("nodule", 0.12, False)]),
            turnaround_s=30.0,
        ),
        # an unregistered segmentation pipeline with two component segments: positive
        "E-seg": add_job(
            engine,
            uids["E"],
            rule="liver",
            pipeline="liver_lesions",
            summary=generic_summary(components=2, pipeline="liver_lesions"),
            turnaround_s=60.0,
        ),
    }
    return Corpus(uids, jobs)
