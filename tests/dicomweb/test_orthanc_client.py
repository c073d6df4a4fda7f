"""Orthanc's DICOMweb plugin, configured with the gateway as one of its DICOMweb servers
(HTTP basic with a read token), lists the gateway's studies and series and retrieves a
study into its own store: every instance arrives with the bytes the gateway holds."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from gateway.dicomweb.tokens import Scope
from tests.conftest import free_port
from tests.dicom_samples import ct_instance, encode
from tests.dicom_samples import testdata as sample_file
from tests.dicomweb.server import WebServer
from tests.dicomweb.stow_helpers import stow
from tests.integration.orthanc import Orthanc


@pytest.fixture
def orthanc_of(web: WebServer, tmp_path: Path) -> Iterator[Orthanc]:
    secret = web.token("ORTHANC", Scope.READ)
    workdir = tmp_path / "orthanc"
    workdir.mkdir()
    orthanc = Orthanc(
        workdir,
        free_port(),
        {},
        dicomweb=True,
        dicomweb_servers={
            "gateway": {"Url": f"{web.dicomweb}/", "Username": "ORTHANC", "Password": secret}
        },
    )
    orthanc.start()
    yield orthanc
    orthanc.stop()


def test_orthanc_lists_and_retrieves_a_study_from_the_gateway(
    web: WebServer, orthanc_of: Orthanc
) -> None:
    orthanc = orthanc_of
    study, series = generate_uid(), generate_uid()
    parts = [encode(ct_instance(study, series, i, rows=32, columns=32)) for i in range(5)]
    other = sample_file("JPEG2000.dcm").read_bytes()  # another study, compressed
    assert stow(web, [*parts, other], web.token("MODALITY", Scope.STORE)).status == 200

    listed = orthanc.post_json("/dicom-web/servers/gateway/get", {"Uri": "/studies"})
    assert listed.status == 200, listed.body[:500]
    studies = {s["0020000D"]["Value"][0] for s in listed.json()}
    assert study in studies and len(studies) == 2
    series_list = orthanc.post_json(
        "/dicom-web/servers/gateway/get", {"Uri": f"/studies/{study}/series"}
    ).json()
    assert [s["0020000E"]["Value"][0] for s in series_list] == [series]
    assert series_list[0]["00201209"]["Value"] == [5]

    retrieved = orthanc.post_json(
        "/dicom-web/servers/gateway/retrieve", {"Resources": [{"Study": study}]}
    )
    assert retrieved.status == 200, retrieved.body[:500]
    held = {
        str(pydicom.dcmread(io.BytesIO(p), stop_before_pixels=True).SOPInstanceUID): p
        for p in parts
    }
    for sop_uid, sent in held.items():
        orthanc_id = orthanc.find_instance(sop_uid)
        assert orthanc_id is not None, f"{sop_uid} not retrieved into Orthanc"
        assert orthanc.instance_file(orthanc_id) == sent
    assert orthanc.find_instance(str(pydicom.dcmread(io.BytesIO(other)).SOPInstanceUID)) is None
