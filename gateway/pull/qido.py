"""Find on a DICOMweb source with QIDO-RS (the DIMSE twin is gateway/pull/find.py)."""

from __future__ import annotations

import json
from typing import Any

from gateway.pull.config import DicomWebSource, PullSettings
from gateway.pull.errors import SourceError
from gateway.pull.find import int_of, modalities_of, text_of
from gateway.pull.http import describe, get, query_string
from gateway.pull.matches import InstanceMatch, SeriesMatch, StudyMatch, StudyQuery

STUDY_INSTANCE_UID = "0020000D"
STUDY_DATE = "00080020"
MODALITIES_IN_STUDY = "00080061"
STUDY_DESCRIPTION = "00081030"
STUDY_INSTANCES = "00201208"
SERIES_INSTANCE_UID = "0020000E"
MODALITY = "00080060"
BODY_PART_EXAMINED = "00180015"
SERIES_DESCRIPTION = "0008103E"
SERIES_NUMBER = "00200011"
SERIES_INSTANCES = "00201209"
SOP_INSTANCE_UID = "00080018"
SOP_CLASS_UID = "00080016"
_ACCEPT = "application/dicom+json"


def _values(item: dict[str, Any], tag: str) -> list[Any]:
    element = item.get(tag)
    if not isinstance(element, dict):
        return []
    values = element.get("Value")
    return values if isinstance(values, list) else []


def _first(item: dict[str, Any], tag: str) -> Any:
    values = _values(item, tag)
    return values[0] if values else None


class QidoQuery:
    def __init__(self, source: DicomWebSource, settings: PullSettings, limit: int) -> None:
        self.source = source
        self.settings = settings
        self.limit = limit  # a study query asks for no more than this many
        self.where = describe(source)

    def _search(self, path: str, what: str) -> list[dict[str, Any]]:
        with get(self.source, self.settings, path, _ACCEPT, what) as response:
            status = response.status
            body = response.read()
        if status == 204 or not body.strip():
            return []
        try:
            document = json.loads(body)
        except ValueError as exc:
            raise SourceError(f"{self.where}: {what}: expected DICOM JSON, found none") from exc
        if not isinstance(document, list):
            raise SourceError(
                f"{self.where}: {what}: expected a JSON array, found {type(document).__name__}"
            )
        return [item for item in document if isinstance(item, dict)]

    def studies(self, query: StudyQuery) -> list[StudyMatch]:
        params = {
            "StudyInstanceUID": query.study_instance_uid,
            "AccessionNumber": query.accession_number,
            "PatientID": query.patient_id,
            "StudyDate": query.date_range,
            "ModalitiesInStudy": query.modality,
            "includefield": [STUDY_DESCRIPTION, MODALITIES_IN_STUDY, STUDY_INSTANCES],
            "limit": str(self.limit),
            "fuzzymatching": "false",
        }
        found = []
        for item in self._search("/studies" + query_string(params), "QIDO-RS studies"):
            uid = text_of(_first(item, STUDY_INSTANCE_UID))
            if uid is None:
                continue
            found.append(
                StudyMatch(
                    study_instance_uid=uid,
                    study_date=text_of(_first(item, STUDY_DATE)),
                    modalities=modalities_of(_values(item, MODALITIES_IN_STUDY)),
                    study_description=text_of(_first(item, STUDY_DESCRIPTION)),
                    instance_count=int_of(_first(item, STUDY_INSTANCES)),
                )
            )
        return found

    def series(self, study_instance_uid: str) -> list[SeriesMatch]:
        params = {"includefield": [BODY_PART_EXAMINED, SERIES_DESCRIPTION, SERIES_INSTANCES]}
        path = f"/studies/{study_instance_uid}/series" + query_string(params)
        found = []
        for item in self._search(path, f"QIDO-RS series of study {study_instance_uid}"):
            uid = text_of(_first(item, SERIES_INSTANCE_UID))
            if uid is None:
                continue
            found.append(
                SeriesMatch(
                    series_instance_uid=uid,
                    modality=text_of(_first(item, MODALITY)),
                    body_part_examined=text_of(_first(item, BODY_PART_EXAMINED)),
                    series_description=text_of(_first(item, SERIES_DESCRIPTION)),
                    series_number=int_of(_first(item, SERIES_NUMBER)),
                    instance_count=int_of(_first(item, SERIES_INSTANCES)),
                )
            )
        return found

    def instances(self, study_instance_uid: str) -> list[InstanceMatch]:
        path = f"/studies/{study_instance_uid}/instances"
        found = []
        for item in self._search(path, f"QIDO-RS instances of study {study_instance_uid}"):
            series_uid = text_of(_first(item, SERIES_INSTANCE_UID))
            uid = text_of(_first(item, SOP_INSTANCE_UID))
            if series_uid is not None and uid is not None:
                found.append(InstanceMatch(series_uid, uid, text_of(_first(item, SOP_CLASS_UID))))
        return found
