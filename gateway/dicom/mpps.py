"""Modality Performed Procedure Step SCP (PS3.4 Annex F): N-CREATE and N-SET.

A modality reports a step IN PROGRESS (N-CREATE), then COMPLETED or DISCONTINUED (N-SET),
the final N-SET listing in its Performed Series Sequence every series and instance it made.
A COMPLETED step completes its study as soon as all of them are stored (checked here, as
each instance arrives, and on each assembly pass); DISCONTINUED leaves it to the quiet
period. Only UIDs, statuses and the coded discontinuation reason are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import events as evt
from sqlalchemy import Engine, select, update

from gateway.audit import AuditKind, Outcome, audit_row, record, utcnow
from gateway.completion.signals import (
    COMPLETED,
    DISCONTINUED,
    IN_PROGRESS,
    ListedInstance,
    replace_listed,
)
from gateway.database import insert_ignoring_duplicates, writer_queue
from gateway.dicom import statuses
from gateway.dicom.clipped import clipped
from gateway.models import PerformedProcedureStep

LOGGER = logging.getLogger(__name__)

MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"
# PS3.4 F.7.2 / PS3.7 C: the statuses an MPPS SCP answers with
INVALID_ATTRIBUTE_VALUE = 0x0106
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
_STATUSES = (IN_PROGRESS, COMPLETED, DISCONTINUED)


class MppsRefusal(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def listed_instances(dataset: Dataset) -> list[ListedInstance] | None:
    """The instances of the Performed Series Sequence; None when the dataset has none."""
    if "PerformedSeriesSequence" not in dataset:
        return None
    listed = []
    for series in dataset.PerformedSeriesSequence or []:
        series_uid = clipped(series.get("SeriesInstanceUID"), 64) or None
        for keyword in (
            "ReferencedImageSequence",
            "ReferencedNonImageCompositeSOPInstanceSequence",
        ):
            for item in series.get(keyword) or []:
                sop_class = clipped(item.get("ReferencedSOPClassUID"), 64)
                sop_instance = clipped(item.get("ReferencedSOPInstanceUID"), 64)
                if not sop_class or not sop_instance:
                    raise MppsRefusal(
                        MISSING_ATTRIBUTE,
                        f"expected Referenced SOP Class and Instance UIDs in each {keyword} "
                        f"item, found an item without them",
                    )
                listed.append(ListedInstance(series_uid, sop_class, sop_instance))
    return listed


def _status_of(dataset: Dataset) -> str | None:
    value = dataset.get("PerformedProcedureStepStatus")
    return None if value is None else clipped(value, 16).upper()


def _study_uid(dataset: Dataset) -> str | None:
    for item in dataset.get("ScheduledStepAttributesSequence") or []:
        uid = clipped(item.get("StudyInstanceUID"), 64)
        if uid:
            return uid
    return None


def _discontinuation(dataset: Dataset) -> str:
    for item in dataset.get("PerformedProcedureStepDiscontinuationReasonCodeSequence") or []:
        meaning = clipped(item.get("CodeMeaning"), 200)
        code = clipped(item.get("CodeValue"), 16)
        if meaning or code:
            return f"{meaning} ({code})" if code else meaning
    return "no reason given"


def _failure(status: int, reason: str) -> Dataset:
    answer = Dataset()
    answer.Status = status
    answer.ErrorComment = reason[:64]  # LO
    return answer


class MppsSCP:
    """Handlers for N-CREATE and N-SET of the MPPS SOP class; shared by every association."""

    def __init__(self, engine: Engine, on_signal: Callable[[], object]) -> None:
        self.engine = engine
        self.on_signal = on_signal  # check whether the study is complete now

    def handlers(self) -> list[tuple[evt.EventType, Any]]:
        return [(evt.EVT_N_CREATE, self.on_n_create), (evt.EVT_N_SET, self.on_n_set)]

    # N-CREATE ---------------------------------------------------------------------------
    def on_n_create(self, event: evt.Event) -> tuple[Dataset | int, Dataset | None]:
        request: Any = event.request
        uid = clipped(getattr(request, "AffectedSOPInstanceUID", None), 64)
        try:
            if str(request.AffectedSOPClassUID) != MPPS_SOP_CLASS:
                raise MppsRefusal(
                    statuses.PROCESSING_FAILURE,
                    f"expected SOP class {MPPS_SOP_CLASS}, found {request.AffectedSOPClassUID}",
                )
            if not uid:
                raise MppsRefusal(
                    MISSING_ATTRIBUTE, "expected an Affected SOP Instance UID, found none"
                )
            dataset = event.attribute_list
            status = _status_of(dataset)
            if status != IN_PROGRESS:
                raise MppsRefusal(
                    INVALID_ATTRIBUTE_VALUE,
                    f"expected Performed Procedure Step Status IN PROGRESS, found {status!r}",
                )
            listed = listed_instances(dataset)
            self._create(event, uid, _study_uid(dataset), listed)
        except MppsRefusal as refusal:
            return self._refuse(event, "N-CREATE", uid, refusal), None
        except Exception as exc:
            unexpected = MppsRefusal(
                statuses.PROCESSING_FAILURE, f"unexpected {type(exc).__name__} in N-CREATE"
            )
            return self._refuse(event, "N-CREATE", uid, unexpected), None
        return statuses.SUCCESS, dataset

    def _create(
        self,
        event: evt.Event,
        uid: str,
        study_uid: str | None,
        listed: list[ListedInstance] | None,
    ) -> None:
        now = utcnow()
        requestor = event.assoc.requestor
        with writer_queue(self.engine), self.engine.begin() as connection:
            mpps_id = connection.execute(
                insert_ignoring_duplicates(connection, PerformedProcedureStep, ["sop_instance_uid"])
                .values(
                    sop_instance_uid=uid,
                    status=IN_PROGRESS,
                    study_instance_uid=study_uid,
                    calling_ae=clipped(requestor.ae_title, 16),
                    source_address=clipped(requestor.address, 64),
                    created_at=now,
                    updated_at=now,
                )
                .returning(PerformedProcedureStep.id)
            ).scalar()
            if mpps_id is None:
                raise MppsRefusal(
                    DUPLICATE_SOP_INSTANCE,
                    f"expected a new MPPS instance, found {uid} already created",
                )
            if listed:
                replace_listed(connection, listed, mpps_id=int(mpps_id))
            record(
                connection,
                audit_row(
                    AuditKind.MPPS_CREATED,
                    actor=clipped(requestor.ae_title, 16),
                    source_address=clipped(requestor.address, 64),
                    study_instance_uid=study_uid,
                    sop_instance_uid=uid,
                    detail={"status": IN_PROGRESS, "listed": len(listed or [])},
                    occurred_at=now,
                ),
            )

    # N-SET ------------------------------------------------------------------------------
    def on_n_set(self, event: evt.Event) -> tuple[Dataset | int, Dataset | None]:
        request: Any = event.request
        uid = clipped(getattr(request, "RequestedSOPInstanceUID", None), 64)
        try:
            if str(request.RequestedSOPClassUID) != MPPS_SOP_CLASS:
                raise MppsRefusal(
                    statuses.PROCESSING_FAILURE,
                    f"expected SOP class {MPPS_SOP_CLASS}, found {request.RequestedSOPClassUID}",
                )
            dataset = event.modification_list
            status = _status_of(dataset)
            if status is not None and status not in _STATUSES:
                raise MppsRefusal(
                    INVALID_ATTRIBUTE_VALUE,
                    f"expected Performed Procedure Step Status in {list(_STATUSES)}, "
                    f"found {status!r}",
                )
            final = self._set(event, uid, status, listed_instances(dataset), dataset)
        except MppsRefusal as refusal:
            return self._refuse(event, "N-SET", uid, refusal), None
        except Exception as exc:
            unexpected = MppsRefusal(
                statuses.PROCESSING_FAILURE, f"unexpected {type(exc).__name__} in N-SET"
            )
            return self._refuse(event, "N-SET", uid, unexpected), None
        if final == COMPLETED:
            try:
                self.on_signal()  # the images usually came first: complete now
            except Exception as exc:  # the assembly pass checks again
                LOGGER.error("completion check after MPPS failed: %s", type(exc).__name__)
        return statuses.SUCCESS, dataset

    def _set(
        self,
        event: evt.Event,
        uid: str,
        status: str | None,
        listed: list[ListedInstance] | None,
        dataset: Dataset,
    ) -> str:
        now = utcnow()
        requestor = event.assoc.requestor
        with writer_queue(self.engine), self.engine.begin() as connection:
            row = connection.execute(
                select(
                    PerformedProcedureStep.id,
                    PerformedProcedureStep.status,
                    PerformedProcedureStep.study_instance_uid,
                ).where(PerformedProcedureStep.sop_instance_uid == uid)
            ).first()
            if row is None:
                raise MppsRefusal(
                    NO_SUCH_OBJECT_INSTANCE,
                    f"expected an MPPS created by N-CREATE, found no instance {uid}",
                )
            mpps_id, current, study_uid = row
            if current != IN_PROGRESS:
                raise MppsRefusal(
                    statuses.PROCESSING_FAILURE,
                    f"MPPS may no longer be updated: it is {current}",
                )
            new_status = status or current
            values: dict[str, Any] = {"status": new_status, "updated_at": now}
            if new_status == DISCONTINUED:
                reason = _discontinuation(dataset)
                values.update(discontinued_reason=reason[:256], settled_at=now)
            changed = connection.execute(
                update(PerformedProcedureStep)
                .where(
                    PerformedProcedureStep.id == mpps_id,
                    PerformedProcedureStep.status == IN_PROGRESS,
                )
                .values(**values)
            ).rowcount
            if changed != 1:  # a concurrent N-SET ended it first
                raise MppsRefusal(
                    statuses.PROCESSING_FAILURE, "MPPS may no longer be updated: ended meanwhile"
                )
            if listed is not None:
                replace_listed(connection, listed, mpps_id=mpps_id)
            detail: dict[str, Any] = {"status": new_status}
            if listed is not None:
                detail["listed"] = len(listed)
            if new_status == DISCONTINUED:
                detail["reason"] = values["discontinued_reason"]
                detail["then"] = "the quiet period completes the study"
            record(
                connection,
                audit_row(
                    AuditKind.MPPS_UPDATED,
                    actor=clipped(requestor.ae_title, 16),
                    source_address=clipped(requestor.address, 64),
                    study_instance_uid=study_uid,
                    sop_instance_uid=uid,
                    detail=detail,
                    occurred_at=now,
                ),
            )
        return str(new_status)

    def _refuse(self, event: evt.Event, operation: str, uid: str, refusal: MppsRefusal) -> Dataset:
        requestor = event.assoc.requestor
        LOGGER.warning(
            "MPPS %s from %s refused with 0x%04X: %s",
            operation,
            clipped(requestor.ae_title, 16),
            refusal.status,
            refusal.reason,
        )
        try:
            with writer_queue(self.engine), self.engine.begin() as connection:
                record(
                    connection,
                    audit_row(
                        AuditKind.MPPS_REFUSED,
                        Outcome.FAILURE,
                        actor=clipped(requestor.ae_title, 16),
                        source_address=clipped(requestor.address, 64),
                        sop_instance_uid=uid or None,
                        detail={
                            "operation": operation,
                            "status": f"0x{refusal.status:04X}",
                            "reason": refusal.reason,
                        },
                    ),
                )
        except Exception as exc:  # the audit must not take the listener down
            LOGGER.error("audit write failed: %s", type(exc).__name__)
        return _failure(refusal.status, refusal.reason)
