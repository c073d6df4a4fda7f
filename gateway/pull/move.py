"""Retrieve a study with C-MOVE: the source sends it to our own AE (the listener), which
stores each instance as any C-STORE; the PACS must know that AE title, host and port."""

from __future__ import annotations

import time
from collections.abc import Sequence

from pydicom.dataset import Dataset
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelMove,
)

from gateway.pull.config import DicomSource, PullSettings
from gateway.pull.dimse import CANCELLED, PENDING, SUCCESS, association, describe, failure
from gateway.pull.dimse import response_status as _status
from gateway.pull.errors import SourceError
from gateway.pull.matches import InstanceMatch
from gateway.pull.retrieved import Retrieved

MOVE_DESTINATION_UNKNOWN = 0xA801
SUB_OPERATIONS_WARNING = 0xB000


def study_identifier(study_instance_uid: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study_instance_uid
    return ds


def sub_operations(status: Dataset) -> tuple[int, int]:
    """(completed, failed) sub-operations of a C-MOVE/C-GET response, 0 where absent."""
    completed = status.get("NumberOfCompletedSuboperations") or 0
    failed = status.get("NumberOfFailedSuboperations") or 0
    return int(completed), int(failed)


class CMoveRetriever:
    def __init__(
        self,
        source: DicomSource,
        settings: PullSettings,
        calling_ae_title: str,
        move_destination: str,
    ) -> None:
        self.source = source
        self.settings = settings
        self.calling_ae_title = calling_ae_title
        self.move_destination = move_destination
        self.where = describe(source)

    def retrieve(self, study_instance_uid: str, listed: Sequence[InstanceMatch]) -> Retrieved:
        model = StudyRootQueryRetrieveInformationModelMove
        deadline = time.monotonic() + self.settings.study_timeout_s
        report = Retrieved()
        with association(
            self.source, self.settings, self.calling_ae_title, [build_context(model)]
        ) as assoc:
            responses = assoc.send_c_move(
                study_identifier(study_instance_uid), self.move_destination, model
            )
            for status, _identifier in responses:
                code = _status(status, "C-MOVE", self.where, self.settings)
                completed, failed = sub_operations(status)
                if code in PENDING:
                    if time.monotonic() > deadline:
                        assoc.send_c_cancel(1, query_model=model)
                        assoc.abort()
                        raise SourceError(
                            f"{self.where}: C-MOVE of study {study_instance_uid} not complete "
                            f"within {self.settings.study_timeout_s:g} s ({completed} sent)"
                        )
                    continue
                report.source_completed, report.source_failed = completed, failed
                if code in (SUCCESS, SUB_OPERATIONS_WARNING):
                    return report  # the caller checks what was stored, instance by instance
                if code == MOVE_DESTINATION_UNKNOWN:
                    raise SourceError(
                        f"{self.where} does not know the move destination "
                        f"{self.move_destination!r} (configure the gateway's AE title, host "
                        "and port on the PACS)",
                        permanent=True,
                    )
                if code == CANCELLED:
                    raise SourceError(f"{self.where} cancelled the C-MOVE")
                raise failure("C-MOVE", self.where, code)
        raise SourceError(f"{self.where}: the C-MOVE ended without a final response")
