"""Find on the source archive: studies by a query, a study's series and its instances.

`SourceQuery` is what the rest of the pull needs; `DimseQuery` answers it with C-FIND in
the Study Root information model (QIDO-RS: gateway/pull/qido.py). Identifying matching keys
(Accession Number, Patient ID) are sent only when the query has them and never logged;
answers carry UIDs and routing attributes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from pydicom.dataset import Dataset
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
)

from gateway.pull.config import DicomSource, PullSettings
from gateway.pull.dimse import CANCELLED, PENDING, SUCCESS, association, describe, failure
from gateway.pull.dimse import response_status as _status
from gateway.pull.errors import SourceError
from gateway.pull.matches import InstanceMatch, SeriesMatch, StudyMatch, StudyQuery


class SourceQuery(Protocol):
    def studies(self, query: StudyQuery) -> list[StudyMatch]: ...

    def series(self, study_instance_uid: str) -> list[SeriesMatch]: ...

    def instances(self, study_instance_uid: str) -> list[InstanceMatch]: ...


def text_of(value: Any) -> str | None:
    """A DICOM value as text, None when absent or empty."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def int_of(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def modalities_of(value: Any) -> tuple[str, ...]:
    """ModalitiesInStudy: one value (text, maybe backslash-separated) or several."""
    if value is None:
        return ()
    items = str(value).split("\\") if isinstance(value, str) else [str(v) for v in value]
    return tuple(item.strip() for item in items if item.strip())


class DimseQuery:
    """C-FIND SCU, one association per query."""

    def __init__(self, source: DicomSource, settings: PullSettings, calling_ae_title: str) -> None:
        self.source = source
        self.settings = settings
        self.calling_ae_title = calling_ae_title
        self.where = describe(source)

    def _find(self, identifier: Dataset) -> Iterator[Dataset]:
        context = build_context(StudyRootQueryRetrieveInformationModelFind)
        with association(self.source, self.settings, self.calling_ae_title, [context]) as assoc:
            responses = assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind)
            for status, answer in responses:
                code = _status(status, "C-FIND", self.where, self.settings)
                if code in PENDING:
                    if answer is not None:
                        yield answer
                    continue
                if code == SUCCESS:
                    return
                if code == CANCELLED:
                    raise SourceError(f"{self.where} cancelled the C-FIND")
                raise failure("C-FIND", self.where, code)
            raise SourceError(f"{self.where}: the C-FIND ended without a final response")

    def studies(self, query: StudyQuery) -> list[StudyMatch]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = query.study_instance_uid or ""
        if query.accession_number is not None:
            ds.AccessionNumber = query.accession_number
        if query.patient_id is not None:
            ds.PatientID = query.patient_id
        ds.StudyDate = query.date_range or ""
        ds.ModalitiesInStudy = query.modality or ""
        ds.StudyDescription = ""
        ds.NumberOfStudyRelatedInstances = ""
        found = []
        for answer in self._find(ds):
            uid = text_of(answer.get("StudyInstanceUID"))
            if uid is None:
                continue
            found.append(
                StudyMatch(
                    study_instance_uid=uid,
                    study_date=text_of(answer.get("StudyDate")),
                    modalities=modalities_of(answer.get("ModalitiesInStudy")),
                    study_description=text_of(answer.get("StudyDescription")),
                    instance_count=int_of(answer.get("NumberOfStudyRelatedInstances")),
                )
            )
        return found

    def series(self, study_instance_uid: str) -> list[SeriesMatch]:
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = study_instance_uid
        ds.SeriesInstanceUID = ""
        ds.Modality = ""
        ds.BodyPartExamined = ""
        ds.SeriesDescription = ""
        ds.SeriesNumber = ""
        ds.NumberOfSeriesRelatedInstances = ""
        found = []
        for answer in self._find(ds):
            uid = text_of(answer.get("SeriesInstanceUID"))
            if uid is None:
                continue
            found.append(
                SeriesMatch(
                    series_instance_uid=uid,
                    modality=text_of(answer.get("Modality")),
                    body_part_examined=text_of(answer.get("BodyPartExamined")),
                    series_description=text_of(answer.get("SeriesDescription")),
                    series_number=int_of(answer.get("SeriesNumber")),
                    instance_count=int_of(answer.get("NumberOfSeriesRelatedInstances")),
                )
            )
        return found

    def instances(self, study_instance_uid: str) -> list[InstanceMatch]:
        found = []
        for series in self.series(study_instance_uid):
            ds = Dataset()
            ds.QueryRetrieveLevel = "IMAGE"
            ds.StudyInstanceUID = study_instance_uid
            ds.SeriesInstanceUID = series.series_instance_uid
            ds.SOPInstanceUID = ""
            ds.SOPClassUID = ""
            for answer in self._find(ds):
                uid = text_of(answer.get("SOPInstanceUID"))
                if uid is not None:
                    found.append(
                        InstanceMatch(
                            series.series_instance_uid, uid, text_of(answer.get("SOPClassUID"))
                        )
                    )
        return found
