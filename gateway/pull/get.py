"""Retrieve a study with C-GET: the instances come back as C-STORE sub-operations on our
own association (SCP role for exactly the SOP classes the source listed), each stored
through the same path as the listener's C-STORE before its status is answered."""

from __future__ import annotations

import time
from collections.abc import Sequence
from io import BytesIO
from typing import cast

from pynetdicom import build_role
from pynetdicom import events as evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelGet,
)
from sqlalchemy import Engine

from gateway.dicom.listener import SUPPORTED_TRANSFER_SYNTAXES
from gateway.dicom.statuses import PROCESSING_FAILURE
from gateway.dicom.storage_scp import file_meta_bytes
from gateway.ingest import Sender
from gateway.pull.config import DicomSource
from gateway.pull.dimse import CANCELLED, PENDING, SUCCESS, association, describe, failure
from gateway.pull.dimse import response_status as _status
from gateway.pull.errors import SourceError
from gateway.pull.matches import InstanceMatch
from gateway.pull.move import SUB_OPERATIONS_WARNING, study_identifier, sub_operations
from gateway.pull.retrieved import Retrieved
from gateway.pull.store import PulledInstanceStore
from gateway.settings import GatewaySettings

_MAX_STORAGE_CONTEXTS = 127  # 128 per association, one is the C-GET's own


class CGetRetriever:
    def __init__(self, source: DicomSource, settings: GatewaySettings, engine: Engine) -> None:
        self.source = source
        self.settings = settings
        self.engine = engine
        self.where = describe(source)

    def retrieve(self, study_instance_uid: str, listed: Sequence[InstanceMatch]) -> Retrieved:
        pull = self.settings.pull
        classes = sorted({i.sop_class_uid for i in listed if i.sop_class_uid})
        if not classes:
            raise SourceError(
                f"{self.where}: C-GET needs the SOP classes of study {study_instance_uid}, "
                "the C-FIND answered none",
                permanent=True,
            )
        if len(classes) > _MAX_STORAGE_CONTEXTS:
            raise SourceError(
                f"{self.where}: study {study_instance_uid} has {len(classes)} SOP classes, "
                f"expected at most {_MAX_STORAGE_CONTEXTS} for one C-GET association",
                permanent=True,
            )
        model = StudyRootQueryRetrieveInformationModelGet
        contexts = [build_context(model)]
        contexts += [build_context(c, list(SUPPORTED_TRANSFER_SYNTAXES)) for c in classes]
        roles = [build_role(c, scp_role=True) for c in classes]
        store = PulledInstanceStore(
            self.settings, self.engine, Sender(self.source.ae_title, self.source.host), "C-GET"
        )
        report = Retrieved()

        def on_c_store(event: evt.Event) -> int:
            try:
                request = cast(C_STORE, event.request)
                body = cast(BytesIO, request.DataSet).getbuffer()
                result = store.receive(
                    file_meta_bytes(event.file_meta),
                    body,
                    str(event.context.transfer_syntax),
                    sop_class_uid=str(request.AffectedSOPClassUID or "") or None,
                    sop_instance_uid=str(request.AffectedSOPInstanceUID or "") or None,
                )
            except Exception:  # answer a status, never pynetdicom's traceback
                return PROCESSING_FAILURE
            report.count(result)
            return result.status

        deadline = time.monotonic() + pull.study_timeout_s
        with association(
            self.source,
            pull,
            self.settings.dicom.ae_title,
            contexts,
            ext_neg=roles,
            evt_handlers=[(evt.EVT_C_STORE, on_c_store)],
        ) as assoc:
            for status, _identifier in assoc.send_c_get(
                study_identifier(study_instance_uid), model
            ):
                code = _status(status, "C-GET", self.where, pull)
                completed, failed = sub_operations(status)
                if code in PENDING:
                    if time.monotonic() > deadline:
                        assoc.send_c_cancel(1, query_model=model)
                        assoc.abort()
                        raise SourceError(
                            f"{self.where}: C-GET of study {study_instance_uid} not complete "
                            f"within {pull.study_timeout_s:g} s ({report.describe()})"
                        )
                    continue
                report.source_completed, report.source_failed = completed, failed
                if code in (SUCCESS, SUB_OPERATIONS_WARNING):
                    return report
                if code == CANCELLED:
                    raise SourceError(f"{self.where} cancelled the C-GET")
                raise failure("C-GET", self.where, code)
        raise SourceError(f"{self.where}: the C-GET ended without a final response")
