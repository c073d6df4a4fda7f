"""No patient name, patient ID or accession number in the log of the real `pacs-gateway web`
process at DEBUG level, whatever the DICOMweb clients do with them: store instances that
carry them (stored, refused as unreadable, refused as outside the URL's study), search by
them (exactly, with a wildcard that is refused, by an unsupported key), and read them back
(metadata, instances, rendered frames)."""

from __future__ import annotations

from pathlib import Path

import requests
from pydicom.uid import generate_uid

from gateway import migrate
from gateway.database import make_engine
from gateway.dicomweb.tokens import Scope, create_token
from tests.conftest import free_port, make_settings
from tests.dicom_samples import SECRET_PATIENT_ID, SECRET_PATIENT_NAME, ct_instance
from tests.dicomweb.server import WebProcess, WebServer
from tests.dicomweb.stow_helpers import file_bytes, stow

ACCESSION = "ACCNOLOG77"


def test_the_web_process_logs_no_patient_name_id_or_accession_number(
    tmp_path: Path, database_url: str
) -> None:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        http_port=free_port(),
        log_level="DEBUG",
        web={"session_cookie_secure": False},
    )
    engine = make_engine(settings)
    migrate.upgrade(settings, engine=engine)
    secret = create_token(engine, "LOGCHECK", Scope.BOTH, actor="test", source_address=None)
    server = WebProcess(settings, tmp_path)
    server.start()
    web = WebServer(settings, engine, settings.http_port)
    try:
        study, series = generate_uid(), generate_uid()
        ds = ct_instance(study, series, 0, rows=8, columns=8)
        ds.AccessionNumber = ACCESSION
        whole = file_bytes(ds)
        outside = ct_instance(generate_uid(), generate_uid(), 0, rows=8, columns=8)
        outside.AccessionNumber = ACCESSION
        assert stow(web, [whole], secret).status == 200
        truncated = file_bytes(ct_instance(study, series, 1, rows=8, columns=8))[:-100]
        assert stow(web, [truncated, file_bytes(outside)], secret, study=study).status == 409

        auth = {"Authorization": f"Bearer {secret}"}

        def get(path: str, **params: str) -> requests.Response:
            return requests.get(web.dicomweb + path, params=params, headers=auth, timeout=30)

        assert len(get("/studies", PatientID=SECRET_PATIENT_ID).json()) == 1
        assert len(get("/studies", AccessionNumber=ACCESSION, includefield="all").json()) == 1
        assert get("/studies", PatientID=SECRET_PATIENT_ID + "*").status_code == 400
        assert get("/series", PatientName=SECRET_PATIENT_NAME, fuzzymatching="true").ok
        instance = f"/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}"
        assert get(f"/studies/{study}/metadata").ok
        assert get(instance).ok
        assert get(f"{instance}/rendered").ok
        assert get("/studies/1.2.3/metadata", PatientID=SECRET_PATIENT_ID).status_code == 404
    finally:
        server.stop()
        engine.dispose()
    log = server.log.read_text(errors="replace")
    # the log was written, at DEBUG, by the application too: the refusals are in it
    assert "STOW-RS from LOGCHECK refused with 0xC210" in log, log[-2000:]
    assert "STOW-RS from LOGCHECK refused with 0x0110" in log, log[-2000:]
    for value in (SECRET_PATIENT_ID, *SECRET_PATIENT_NAME.split("^"), ACCESSION):
        assert value not in log, f"{value!r} in the web process's log"
