"""Index received instances: study, series and instance rows plus audit, in one transaction.

The commit of this transaction is the point at which an instance counts as stored."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Engine, Integer, bindparam, text

from gateway.audit import AuditKind, audit_row, record, utcnow
from gateway.database import writer_queue
from gateway.dicom.header import InstanceHeader
from gateway.dicom.spool import SpooledFile
from gateway.models import AuditEvent


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


class _AlreadyStored(Exception):
    """Rolls back the transaction of an instance whose SOP Instance UID is already stored."""


def _naive(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes, PostgreSQL aware ones; all of ours are UTC.
    return None if value is None else value.replace(tzinfo=None)


_TIMESTAMP = DateTime(timezone=True)

# One text for both databases: SQLite (>= 3.35) and PostgreSQL share ON CONFLICT and
# RETURNING. Text, not SQLAlchemy's dialect inserts: those are never cached
# (inherit_cache = False), and compiling them cost more than the commit itself.
_UPSERT_STUDY = (
    text(
        """
    INSERT INTO studies (study_instance_uid, state, study_date, study_description,
                         first_calling_ae, instance_count, first_received_at,
                         last_received_at, completion_count)
    VALUES (:study_uid, 'receiving', :study_date, :study_description, :calling_ae, 1,
            :now, :now, 0)
    ON CONFLICT (study_instance_uid) DO UPDATE SET
        instance_count = studies.instance_count + 1,
        last_received_at = excluded.last_received_at,
        -- a late instance reopens a complete study; reopened_at = now tells this
        -- transaction that it was the one that reopened it
        reopened_at = CASE WHEN studies.state = 'complete'
                           THEN excluded.last_received_at ELSE studies.reopened_at END,
        state = CASE WHEN studies.state = 'complete' THEN 'updated' ELSE studies.state END
    RETURNING id, reopened_at
    """
    )
    .bindparams(bindparam("now", type_=_TIMESTAMP))
    .columns(id=Integer, reopened_at=_TIMESTAMP)
)

_UPSERT_SERIES = text(
    """
    INSERT INTO series (study_id, series_instance_uid, modality, body_part_examined,
                        series_description, series_number, slice_thickness,
                        frame_of_reference_uid, instance_count)
    VALUES (:study_id, :series_uid, :modality, :body_part_examined, :series_description,
            :series_number, :slice_thickness, :frame_of_reference_uid, 1)
    ON CONFLICT (series_instance_uid) DO UPDATE SET
        instance_count = series.instance_count + 1
    RETURNING id, study_id
    """
)

_INSERT_INSTANCE = text(
    """
    INSERT INTO instances (series_id, sop_instance_uid, sop_class_uid, transfer_syntax_uid,
                           instance_number, file_path, size_bytes, calling_ae, received_at,
                           slice_position, images_in_acquisition, acquisition_number)
    VALUES (:series_id, :sop_instance_uid, :sop_class_uid, :transfer_syntax_uid,
            :instance_number, :file_path, :size_bytes, :calling_ae, :now,
            :slice_position, :images_in_acquisition, :acquisition_number)
    ON CONFLICT (sop_instance_uid) DO NOTHING
    RETURNING id
    """
).bindparams(bindparam("now", type_=_TIMESTAMP))


_SELECT_FILE = text("SELECT file_path FROM instances WHERE sop_instance_uid = :uid")
_REPLACE_FILE = text(
    "UPDATE instances SET file_path = :file_path, size_bytes = :size_bytes "
    "WHERE sop_instance_uid = :uid"
)


class InstanceIndex:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writers = writer_queue(engine)
        self._sqlite = _SqliteCommit(engine) if engine.dialect.name == "sqlite" else None
        if engine.dialect.name not in ("postgresql", "sqlite"):
            raise RuntimeError(
                f"expected a postgresql or sqlite database, found {engine.dialect.name}"
            )

    def stored_file(self, sop_instance_uid: str) -> str | None:
        """The spool path the index holds for an instance, or None if not stored."""
        with self.engine.connect() as connection:
            path = connection.execute(_SELECT_FILE, {"uid": sop_instance_uid}).scalar()
            connection.rollback()
        return None if path is None else str(path)

    def replace_missing_file(self, sop_instance_uid: str, spooled: SpooledFile) -> None:
        """Point a stored instance whose file has gone at a fresh copy (self-repair)."""
        with self._writers, self.engine.begin() as connection:
            connection.execute(
                _REPLACE_FILE,
                {
                    "uid": sop_instance_uid,
                    "file_path": spooled.relative_path,
                    "size_bytes": spooled.size_bytes,
                },
            )
            record(
                connection,
                audit_row(
                    AuditKind.INSTANCE_REPAIRED,
                    sop_instance_uid=sop_instance_uid,
                    detail={"reason": "stored file missing; replaced by a new copy"},
                ),
            )

    def record_duplicate(self, header: InstanceHeader, sender: Sender) -> None:
        with self.engine.begin() as connection:
            record(
                connection,
                audit_row(
                    AuditKind.INSTANCE_DUPLICATE,
                    actor=sender.ae_title,
                    source_address=sender.address,
                    study_instance_uid=header.study_instance_uid,
                    sop_instance_uid=header.sop_instance_uid,
                ),
            )

    def record_instance(
        self, header: InstanceHeader, spooled: SpooledFile, sender: Sender
    ) -> Receipt:
        """Commit the instance's rows; DUPLICATE (nothing changed) if already stored."""
        now = utcnow()
        values = _row_values(header, spooled, sender)
        try:
            with self._writers:
                if self._sqlite is not None:
                    self._sqlite.commit(values, now)
                else:
                    self._commit(values, now)
        except _AlreadyStored:
            self.record_duplicate(header, sender)
            return Receipt.DUPLICATE
        return Receipt.STORED

    def _commit(self, values: dict[str, Any], now: datetime) -> None:
        """Through SQLAlchemy (PostgreSQL): the statements' compiled forms are cached."""
        with self.engine.begin() as connection:
            study_id, reopened_at = connection.execute(_UPSERT_STUDY, {**values, "now": now}).one()
            series_id, owner = connection.execute(
                _UPSERT_SERIES, {**values, "study_id": study_id}
            ).one()
            if owner != study_id:
                raise _conflict(values)
            inserted = connection.execute(
                _INSERT_INSTANCE, {**values, "series_id": series_id, "now": now}
            ).scalar()
            if inserted is None:
                raise _AlreadyStored  # undo the study and series counts
            record(connection, *_audit_rows(values, now, _naive(reopened_at) == _naive(now)))


def _row_values(header: InstanceHeader, spooled: SpooledFile, sender: Sender) -> dict[str, Any]:
    """The bind values of the instance's statements (study, series, instance, audit)."""
    return {
        "study_uid": header.study_instance_uid,
        "study_date": header.study_date,
        "study_description": header.study_description,
        "calling_ae": sender.ae_title,
        "source_address": sender.address,
        "series_uid": header.series_instance_uid,
        "modality": header.modality,
        "body_part_examined": header.body_part_examined,
        "series_description": header.series_description,
        "series_number": header.series_number,
        "slice_thickness": header.slice_thickness,
        "frame_of_reference_uid": header.frame_of_reference_uid,
        "sop_instance_uid": header.sop_instance_uid,
        "sop_class_uid": header.sop_class_uid,
        "transfer_syntax_uid": header.transfer_syntax_uid,
        "instance_number": header.instance_number,
        "slice_position": header.slice_position,
        "images_in_acquisition": header.images_in_acquisition,
        "acquisition_number": header.acquisition_number,
        "file_path": spooled.relative_path,
        "size_bytes": spooled.size_bytes,
    }


def _conflict(values: dict[str, Any]) -> HierarchyConflict:
    return HierarchyConflict(
        f"expected series {values['series_uid']} in study {values['study_uid']}, "
        "found it stored under another study"
    )


def _audit_rows(values: dict[str, Any], now: datetime, reopened: bool) -> list[dict[str, Any]]:
    rows = [
        audit_row(
            AuditKind.INSTANCE_STORED,
            actor=values["calling_ae"],
            source_address=values["source_address"],
            study_instance_uid=values["study_uid"],
            sop_instance_uid=values["sop_instance_uid"],
            detail={"bytes": values["size_bytes"], "ts": values["transfer_syntax_uid"]},
            occurred_at=now,
        )
    ]
    if reopened:  # this transaction reopened a complete study
        rows.append(
            audit_row(
                AuditKind.STUDY_UPDATED,
                actor=values["calling_ae"],
                study_instance_uid=values["study_uid"],
                detail={"reason": "instance received after completion"},
                occurred_at=now,
            )
        )
    return rows


_INSERT_AUDIT = (
    "INSERT INTO audit_events (occurred_at, kind, outcome, actor, source_address, "
    "study_instance_uid, sop_instance_uid, detail) VALUES (:occurred_at, :kind, :outcome, "
    ":actor, :source_address, :study_instance_uid, :sop_instance_uid, :detail)"
)


class _SqliteCommit:
    """The same statements on the driver's connection, without SQLAlchemy's execution
    layer: for SQLite that layer (context, result, bind processing per statement) cost more
    CPU than the commit itself. Values are bound by the columns' own SQLAlchemy processors,
    so the stored text is the same as through the ORM. Called with the writer lock held."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        dialect = engine.dialect
        columns = AuditEvent.__table__.c
        self._time = columns.occurred_at.type.dialect_impl(dialect).bind_processor(dialect)
        self._json = columns.detail.type.dialect_impl(dialect).bind_processor(dialect)
        self._study = str(_UPSERT_STUDY)
        self._series = str(_UPSERT_SERIES)
        self._instance = str(_INSERT_INSTANCE)

    def commit(self, values: dict[str, Any], now: datetime) -> None:
        stamp = self._time(now) if self._time is not None else now
        raw = self.engine.raw_connection()  # pooled, with the pragmas of make_engine
        try:
            cursor = raw.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                self._rows(cursor, values, stamp, now)
                cursor.execute("COMMIT")
            except BaseException:
                if raw.driver_connection is not None and raw.driver_connection.in_transaction:
                    cursor.execute("ROLLBACK")
                raise
        finally:
            raw.close()

    def _rows(self, cursor: Any, values: dict[str, Any], stamp: Any, now: datetime) -> None:
        cursor.execute(self._study, {**values, "now": stamp})
        study_id, reopened_at = cursor.fetchone()
        cursor.execute(self._series, {**values, "study_id": study_id})
        series_id, owner = cursor.fetchone()
        if owner != study_id:
            raise _conflict(values)
        cursor.execute(self._instance, {**values, "series_id": series_id, "now": stamp})
        if cursor.fetchone() is None:
            raise _AlreadyStored  # undo the study and series counts
        rows = _audit_rows(values, now, reopened_at == stamp)
        for row in rows:
            row["occurred_at"] = stamp
            if self._json is not None:
                row["detail"] = self._json(row["detail"])
        cursor.executemany(_INSERT_AUDIT, rows)
