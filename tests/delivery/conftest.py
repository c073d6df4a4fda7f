"""Delivery fixtures: Orthanc as the PACS (DICOM and DICOMweb), a phantom study stored in it,
and result objects built from the phantom's ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.models import AuditEvent, Delivery
from gateway.results.build import ResultObject, build_results
from gateway.results.config import ResultsSettings
from gateway.results.source import read_source_series
from tests.conftest import free_port
from tests.integration.conftest import require_tool
from tests.integration.orthanc import ORTHANC_BINARY, Orthanc
from tests.results.cases import Case, phantom_case


@pytest.fixture(scope="session")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    require_tool(ORTHANC_BINARY)
    server = Orthanc(
        tmp_path_factory.mktemp("pacs"), free_port(), {}, dicom_port=free_port(), dicomweb=True
    )
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class StudyInPacs:
    case: Case
    orthanc_study_id: str
    objects: list[ResultObject]


def store_case_in_pacs(pacs: Orthanc, case: Case) -> str:
    study_ids = {pacs.upload(path.read_bytes())["ParentStudy"] for path in case.paths}
    (study_id,) = study_ids
    return str(study_id)


@pytest.fixture
def study_in_pacs(pacs: Orthanc, tmp_path: Path) -> StudyInPacs:
    """A fresh phantom study in the PACS and its SEG and SR (not yet delivered)."""
    case = phantom_case(tmp_path / "ct", seed=41, shape=(16, 96, 96), n_nodules=2)
    study_id = store_case_in_pacs(pacs, case)
    objects = build_results(read_source_series(case.paths), case.findings, ResultsSettings())
    return StudyInPacs(case, study_id, objects)


@pytest.fixture
def small_results(tmp_path: Path) -> list[ResultObject]:
    case = phantom_case(tmp_path / "ct", seed=42, shape=(8, 64, 64), n_nodules=1)
    return build_results(read_source_series(case.paths), case.findings, ResultsSettings())


def delivery_rows(engine: Engine) -> dict[tuple[str, str], Delivery]:
    """(destination, kind) -> row, detached (attributes loaded)."""
    with Session(engine) as session:
        rows = session.scalars(select(Delivery)).all()
    return {(r.destination, r.kind): r for r in rows}


def audit_kinds(engine: Engine, sop_instance_uid: str) -> list[str]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(AuditEvent.kind)
                .where(AuditEvent.sop_instance_uid == sop_instance_uid)
                .order_by(AuditEvent.id)
            ).scalars()
        )
