"""The C-STORE path fills the same keyed-hash index as STOW-RS (one store for both
transports): a study sent by DCMTK-like C-STORE is found by QIDO-RS by its Accession Number
and Patient ID, and the database holds neither value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pydicom
import requests
from sqlalchemy import select

from gateway.models import Study
from gateway.settings import GatewaySettings
from tests.conftest import RunningGateway
from tests.dicom_samples import SECRET_PATIENT_ID, write_series
from tests.dicomweb.server import ThreadedWebServer
from tests.scu import send_files


def test_a_c_stored_study_is_found_by_patient_id_and_accession_number(
    settings: GatewaySettings,
    start_gateway: Callable[[GatewaySettings], RunningGateway],
    engine: object,
    tmp_path: Path,
) -> None:
    gateway = start_gateway(settings)
    paths = write_series(tmp_path / "series", 3)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.AccessionNumber = "ACC-CSTORE-1"
        ds.save_as(path)
    assert send_files(gateway.port, paths) == [0, 0, 0]
    study_uid = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
    server = ThreadedWebServer(settings, engine)  # type: ignore[arg-type]
    web = server.start()
    try:
        headers = {"Authorization": f"Bearer {web.token('FINDER')}"}
        for key, value in (("PatientID", SECRET_PATIENT_ID), ("AccessionNumber", "ACC-CSTORE-1")):
            reply = requests.get(
                f"{web.dicomweb}/studies", params={key: value}, headers=headers, timeout=30
            )
            assert [s["0020000D"]["Value"][0] for s in reply.json()] == [study_uid], key
        with web.engine.connect() as connection:
            row = connection.execute(select(Study.__table__)).one()
        assert SECRET_PATIENT_ID not in repr(row) and "ACC-CSTORE-1" not in repr(row)
    finally:
        server.stop()
