"""Small CT and MR studies for the source PACS, with chosen dates, accession numbers,
patients and body parts (a few 16x16 slices each, so a run takes seconds)."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from pydicom import dcmread
from pydicom.uid import MRImageStorage, generate_uid

from tests.integration.dicom_factory import MadeInstance, ct_series


@dataclass(frozen=True)
class SourceStudy:
    key: str
    study_instance_uid: str
    study_date: str
    accession_number: str
    patient_id: str
    modality: str
    body_part: str
    instances: tuple[MadeInstance, ...]

    @property
    def sop_instance_uids(self) -> set[str]:
        return {i.sop_instance_uid for i in self.instances}


def make_study(
    key: str,
    *,
    study_date: str,
    patient_id: str,
    accession_number: str | None = None,
    modality: str = "CT",
    body_part: str = "CHEST",
    count: int = 3,
    size: int = 16,
) -> SourceStudy:
    study_uid = generate_uid()
    accession = accession_number or f"ACC{key.upper()[:13]}"
    made = []
    for instance in ct_series(
        count, study_instance_uid=study_uid, patient_id=patient_id, size=size
    ):
        ds = dcmread(BytesIO(instance.data))
        ds.StudyDate = study_date
        ds.AccessionNumber = accession
        ds.BodyPartExamined = body_part
        ds.StudyDescription = f"{modality} {body_part}"
        if modality != "CT":
            ds.Modality = modality
            ds.SOPClassUID = MRImageStorage
            ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        made.append(
            MadeInstance(
                sop_instance_uid=instance.sop_instance_uid,
                sop_class_uid=str(ds.SOPClassUID),
                series_instance_uid=instance.series_instance_uid,
                study_instance_uid=study_uid,
                transfer_syntax_uid=instance.transfer_syntax_uid,
                data=buffer.getvalue(),
            )
        )
    return SourceStudy(
        key, study_uid, study_date, accession, patient_id, modality, body_part, tuple(made)
    )
