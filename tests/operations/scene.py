"""Studies stored through the real store path (InstanceStore: spool files, rows, audit),
completed by the real assembler, with job and delivery rows as the router, the workers and
the deliverer leave them."""

from __future__ import annotations

import datetime as dt
import struct
from pathlib import Path

from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from gateway.assembly import StudyAssembler
from gateway.audit import utcnow
from gateway.dicom.spool import Spool
from gateway.dicom.store_instance import InstanceStore
from gateway.ingest import Sender
from gateway.models import Delivery, DeliveryState, Instance, Job, JobState, Series, Study
from gateway.settings import GatewaySettings
from tests.dicom_samples import ct_instance, encode


def split(data: bytes) -> tuple[bytes, bytes]:
    """File meta and dataset body of a Part 10 file, as a transport hands them to the store."""
    (group_length,) = struct.unpack("<I", data[140:144])
    end = 144 + group_length
    return data[:end], data[end:]


class Scene:
    def __init__(self, settings: GatewaySettings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.store = InstanceStore(engine, Spool(settings.spool_dir, min_free_bytes=0))

    def store_instances(
        self, study_uid: str, series_uid: str, count: int, start: int = 0
    ) -> list[str]:
        """Store `count` CT instances; their spool paths."""
        paths = []
        for index in range(start, start + count):
            meta, body = split(encode(ct_instance(study_uid, series_uid, index)))
            outcome = self.store.receive(
                Sender("CTSCANNER1", "127.0.0.1"),
                meta,
                memoryview(body),
                ExplicitVRLittleEndian,
                expected_sop_class_uid=None,
                announced_sop_instance_uid=None,
                transport="test",
            )
            assert outcome.stored, outcome.reason
            assert outcome.header is not None
            paths.append(self.file_of(outcome.header.sop_instance_uid))
        return paths

    def file_of(self, sop_instance_uid: str) -> str:
        with self.engine.connect() as connection:
            return str(
                connection.execute(
                    select(Instance.file_path).where(Instance.sop_instance_uid == sop_instance_uid)
                ).scalar_one()
            )

    def study(self, instances: int = 3, *, routed: bool = True) -> StoredStudy:
        """A complete study (one series), routed by the router unless `routed` is False."""
        study_uid, series_uid = generate_uid(), generate_uid()
        paths = self.store_instances(study_uid, series_uid, instances)
        self.complete()
        if routed:
            self.mark_routed(study_uid)
        contents = {p: (self.settings.spool_dir / p).read_bytes() for p in paths}
        return StoredStudy(study_uid, series_uid, contents)

    def complete(self) -> None:
        StudyAssembler(self.engine, 0.001).complete_quiet_studies(
            now=utcnow() + dt.timedelta(seconds=5)
        )

    def mark_routed(self, study_uid: str) -> None:
        """What the router leaves once it has routed the study's latest generation."""
        with self.engine.begin() as connection:
            connection.execute(
                update(Study)
                .where(Study.study_instance_uid == study_uid)
                .values(routed_generation=Study.completion_count)
            )

    def set_last_received(self, study_uid: str, when: dt.datetime) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(Study)
                .where(Study.study_instance_uid == study_uid)
                .values(last_received_at=when)
            )

    def job(
        self,
        study: StoredStudy,
        state: JobState,
        *,
        finished_at: dt.datetime | None = None,
        pipeline: str = "lung_nodules",
    ) -> int:
        now = utcnow()
        with self.engine.begin() as connection:
            study_id = connection.execute(
                select(Study.id).where(Study.study_instance_uid == study.uid)
            ).scalar_one()
            return int(
                connection.execute(
                    insert(Job)
                    .values(
                        study_id=study_id,
                        study_instance_uid=study.uid,
                        generation=1,
                        rule_name="chest-ct",
                        pipeline=pipeline,
                        model_key="m:1",
                        series_instance_uid=study.series_uid,
                        destinations=["pacs"],
                        priority="routine",
                        state=state,
                        attempts=1,
                        created_at=now,
                        updated_at=finished_at or now,
                        finished_at=finished_at,
                    )
                    .returning(Job.id)
                ).scalar_one()
            )

    def delivery(self, study: StoredStudy, state: DeliveryState, kind: str = "seg") -> None:
        now = utcnow()
        with self.engine.begin() as connection:
            connection.execute(
                insert(Delivery).values(
                    destination="pacs",
                    study_instance_uid=study.uid,
                    series_instance_uid=generate_uid(),
                    sop_instance_uid=generate_uid(),
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.66.4",
                    kind=kind,
                    file_path=f"{study.uid}/{kind}.dcm",
                    state=state,
                    attempts=1,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                    delivered_at=now if state == DeliveryState.DELIVERED else None,
                )
            )

    def study_row(self, study_uid: str) -> Study:
        with Session(self.engine, expire_on_commit=False) as session:
            study: Study = session.execute(
                select(Study).where(Study.study_instance_uid == study_uid)
            ).scalar_one()
            return study

    def instance_rows(self, study_uid: str) -> int:
        with self.engine.connect() as connection:
            return len(
                connection.execute(
                    select(Instance.id)
                    .join(Series, Instance.series_id == Series.id)
                    .join(Study, Series.study_id == Study.id)
                    .where(Study.study_instance_uid == study_uid)
                ).all()
            )


class StoredStudy:
    def __init__(self, uid: str, series_uid: str, contents: dict[str, bytes]) -> None:
        self.uid = uid
        self.series_uid = series_uid
        self.contents = contents  # spool path -> bytes as stored

    def files_present(self, spool: Path) -> int:
        return sum((spool / p).is_file() for p in self.contents)

    def intact(self, spool: Path) -> bool:
        return all(
            (spool / p).is_file() and (spool / p).read_bytes() == data
            for p, data in self.contents.items()
        )
