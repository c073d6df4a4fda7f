"""Patient name and ID of a study, read from one stored file's header when an operator or
admin opens the study page. Never logged, never audited (the audit says only who looked)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from sqlalchemy import Engine, select

from gateway.models import Instance, Series, Study
from gateway.settings import GatewaySettings


@dataclass(frozen=True)
class PatientIdentity:
    name: str
    patient_id: str


def patient_identity(
    settings: GatewaySettings, engine: Engine, study_instance_uid: str
) -> PatientIdentity | None:
    with engine.connect() as connection:
        relative = connection.execute(
            select(Instance.file_path)
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
            .where(Study.study_instance_uid == study_instance_uid)
            .order_by(Instance.id)
            .limit(1)
        ).scalar()
    if relative is None:
        return None
    path: Path = settings.spool_dir / relative
    try:
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=["PatientName", "PatientID"]
        )
    except (OSError, ValueError, pydicom.errors.InvalidDicomError):
        return None
    return PatientIdentity(str(ds.get("PatientName", "") or ""), str(ds.get("PatientID", "") or ""))
