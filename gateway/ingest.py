"""Index received instances: study, series and instance rows plus audit, in one transaction.

The commit of this transaction is the point at which an instance counts as stored.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, case, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from gateway.audit import AuditKind, audit_row, record, utcnow
from gateway.dicom.header import InstanceHeader
from gateway.dicom.spool import SpooledFile
from gateway.models import Instance, Series, Study, StudyState


class HierarchyConflict(Exception):
    """A series UID already belongs to another study: the sender's data is inconsistent."""


class Receipt(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"


@dataclass(frozen=True, slots=True)
class Sender:
    """Who sent an instance: calling AE title and source address (no PHI)."""

    ae_title: str
    address: str


def _insert_for(connection: Connection) -> Any:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"expected a postgresql or sqlite database, found {dialect}")


class InstanceIndex:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def is_stored(self, sop_instance_uid: str) -> bool:
        with self.engine.connect() as connection:
            found = connection.execute(
                select(Instance.id).where(Instance.sop_instance_uid == sop_instance_uid)
            ).first()
            connection.rollback()
        return found is not None

    def record_duplicate(self, header: InstanceHeader, sender: Sender) -> None:
        with self.engine.begin() as connection:
            record(connection, self._duplicate_audit(header, sender))

    def _duplicate_audit(self, header: InstanceHeader, sender: Sender) -> dict[str, Any]:
        return audit_row(
            AuditKind.INSTANCE_DUPLICATE,
            actor=sender.ae_title,
            source_address=sender.address,
            study_instance_uid=header.study_instance_uid,
            sop_instance_uid=header.sop_instance_uid,
        )

    def record_instance(
        self, header: InstanceHeader, spooled: SpooledFile, sender: Sender
    ) -> Receipt:
        """Commit the instance's rows; DUPLICATE if the SOP Instance UID is already stored."""
        now = utcnow()
        try:
            with self.engine.begin() as connection:
                study_id, reopened = self._upsert_study(connection, header, sender, now)
                series_id = self._upsert_series(connection, header, study_id)
                connection.execute(
                    insert(Instance),
                    {
                        "series_id": series_id,
                        "sop_instance_uid": header.sop_instance_uid,
                        "sop_class_uid": header.sop_class_uid,
                        "transfer_syntax_uid": header.transfer_syntax_uid,
                        "instance_number": header.instance_number,
                        "file_path": spooled.relative_path,
                        "size_bytes": spooled.size_bytes,
                        "calling_ae": sender.ae_title,
                        "received_at": now,
                    },
                )
                rows = [
                    audit_row(
                        AuditKind.INSTANCE_STORED,
                        actor=sender.ae_title,
                        source_address=sender.address,
                        study_instance_uid=header.study_instance_uid,
                        sop_instance_uid=header.sop_instance_uid,
                        detail={"bytes": spooled.size_bytes, "ts": header.transfer_syntax_uid},
                        occurred_at=now,
                    )
                ]
                if reopened:
                    rows.append(
                        audit_row(
                            AuditKind.STUDY_UPDATED,
                            actor=sender.ae_title,
                            study_instance_uid=header.study_instance_uid,
                            detail={"reason": "instance received after completion"},
                            occurred_at=now,
                        )
                    )
                record(connection, *rows)
        except IntegrityError:
            # Same SOP Instance UID committed concurrently by another association.
            if not self.is_stored(header.sop_instance_uid):
                raise
            self.record_duplicate(header, sender)
            return Receipt.DUPLICATE
        return Receipt.STORED

    def _upsert_study(
        self, connection: Connection, header: InstanceHeader, sender: Sender, now: datetime
    ) -> tuple[int, bool]:
        upsert = _insert_for(connection)
        previous = connection.execute(
            select(Study.id, Study.state).where(
                Study.study_instance_uid == header.study_instance_uid
            )
        ).first()
        if previous is None:
            statement = (
                upsert(Study)
                .values(
                    study_instance_uid=header.study_instance_uid,
                    state=StudyState.RECEIVING,
                    study_date=header.study_date,
                    study_description=header.study_description,
                    first_calling_ae=sender.ae_title,
                    instance_count=1,
                    first_received_at=now,
                    last_received_at=now,
                    completion_count=0,
                )
                .on_conflict_do_nothing(index_elements=["study_instance_uid"])
                .returning(Study.id)
            )
            inserted = connection.execute(statement).scalar()
            if inserted is not None:
                return int(inserted), False
            previous = connection.execute(
                select(Study.id, Study.state).where(
                    Study.study_instance_uid == header.study_instance_uid
                )
            ).one()
        study_id, state = previous
        connection.execute(
            update(Study)
            .where(Study.id == study_id)
            .values(
                instance_count=Study.instance_count + 1,
                last_received_at=now,
                state=case(
                    (Study.state == StudyState.COMPLETE, StudyState.UPDATED),
                    else_=Study.state,
                ),
            )
        )
        return int(study_id), state == StudyState.COMPLETE

    def _upsert_series(self, connection: Connection, header: InstanceHeader, study_id: int) -> int:
        upsert = _insert_for(connection)
        statement = (
            upsert(Series)
            .values(
                study_id=study_id,
                series_instance_uid=header.series_instance_uid,
                modality=header.modality,
                body_part_examined=header.body_part_examined,
                series_description=header.series_description,
                series_number=header.series_number,
                slice_thickness=header.slice_thickness,
                frame_of_reference_uid=header.frame_of_reference_uid,
                instance_count=1,
            )
            .on_conflict_do_update(
                index_elements=["series_instance_uid"],
                set_={"instance_count": Series.instance_count + 1},
            )
            .returning(Series.id, Series.study_id)
        )
        series_id, owner = connection.execute(statement).one()
        if owner != study_id:
            raise HierarchyConflict(
                f"expected series {header.series_instance_uid} in study "
                f"{header.study_instance_uid}, found it already stored under another study"
            )
        return int(series_id)
