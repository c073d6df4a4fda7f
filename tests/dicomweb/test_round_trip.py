"""dicomweb-client as a real client: pydicom's storage test files stored by STOW-RS, found by
QIDO-RS and retrieved by WADO-RS byte for byte, with their metadata, frames and renderings."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from PIL import Image
from sqlalchemy import select

from gateway.models import Instance, Study
from tests.dicom_samples import storage_test_files
from tests.dicom_samples import testdata as sample_file
from tests.dicomweb.server import WebServer, multipart_body, parse_multipart

# Bad on purpose (truncated; a body in implicit VR under an explicit VR syntax): refused.
BAD_TEST_FILES = {"MR_truncated.dcm", "rtplan_truncated.dcm", "SC_rgb_jpeg.dcm"}


def _reencodes_exactly(path: Path) -> bool:
    """dicomweb-client sends pydicom.dcmwrite(dataset): the file's own bytes for these."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            out = io.BytesIO()
            pydicom.dcmwrite(out, ds)
    except Exception:
        return False
    return out.getvalue() == path.read_bytes()


def _uids(path: Path) -> tuple[str, str, str]:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def test_pydicom_files_round_trip_byte_for_byte(web: WebServer) -> None:
    files = storage_test_files()
    assert len(files) > 40, f"expected pydicom's test files, found {len(files)}"
    secret = web.token("ROUNDTRIP")
    client = web.client(secret)
    exact = [p for p in files if p.name not in BAD_TEST_FILES and _reencodes_exactly(p)]
    raw = [p for p in files if p not in exact]
    assert len(exact) > 40
    first_sent: dict[str, Path] = {}  # several pydicom files share a SOP Instance UID
    for path in exact:  # the client encodes the datasets: here that is the file itself
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            answer = client.store_instances([pydicom.dcmread(path)])
        assert "FailedSOPSequence" not in answer, path.name
        assert len(answer.ReferencedSOPSequence) == 1
        first_sent.setdefault(_uids(path)[2], path)
    for path in raw:  # the rest as they are on disk
        body, content_type = multipart_body([path.read_bytes()])
        reply = requests.post(
            f"{web.dicomweb}/studies",
            data=body,
            headers={"Content-Type": content_type, "Authorization": f"Bearer {secret}"},
            timeout=60,
        )
        answer = pydicom.Dataset.from_json(reply.json())
        if path.name in BAD_TEST_FILES:
            assert reply.status_code == 409, path.name
            assert answer.FailedSOPSequence[0].FailureReason == 0xC210, path.name
            continue
        assert reply.status_code == 200, (path.name, reply.text)
        first_sent.setdefault(_uids(path)[2], path)

    studies = client.search_for_studies()
    assert len(studies) == len({_uids(p)[0] for p in first_sent.values()})
    for sop_uid, path in first_sent.items():
        study, series, _ = _uids(path)
        found = client.search_for_instances(
            study_instance_uid=study, search_filters={"SOPInstanceUID": sop_uid}
        )
        assert [pydicom.Dataset.from_json(f).SOPInstanceUID for f in found] == [sop_uid]
        # The bytes of the first file sent with this UID, exactly, read by a MIME parser.
        reply = requests.get(
            f"{web.dicomweb}/studies/{study}/series/{series}/instances/{sop_uid}",
            headers={
                "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
                "Authorization": f"Bearer {secret}",
            },
            timeout=60,
        )
        assert reply.status_code == 200, path.name
        [(content_type, payload)] = parse_multipart(reply)
        assert content_type.startswith("application/dicom"), path.name
        assert payload == path.read_bytes(), path.name
        if path in exact:  # and through dicomweb-client's own decoding
            retrieved = client.retrieve_instance(
                study, series, sop_uid, media_types=(("application/dicom", "*"),)
            )
            out = io.BytesIO()
            pydicom.dcmwrite(out, retrieved)
            assert out.getvalue() == path.read_bytes(), path.name


def test_a_study_comes_back_whole_and_its_metadata_points_at_bulk_data(web: WebServer) -> None:
    secret = web.token("VIEWER")
    client = web.client(secret)
    names = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm"]
    datasets = [pydicom.dcmread(sample_file(n)) for n in names]
    client.store_instances(datasets)
    ct = datasets[0]
    study = client.retrieve_study(ct.StudyInstanceUID, media_types=(("application/dicom", "*"),))
    assert [str(d.SOPInstanceUID) for d in study] == [str(ct.SOPInstanceUID)]
    metadata = client.retrieve_instance_metadata(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID
    )
    pixel_uri = metadata["7FE00010"]["BulkDataURI"]
    assert "InlineBinary" not in metadata["7FE00010"] and "Value" not in metadata["7FE00010"]
    assert metadata["00100020"]["Value"] == [ct.PatientID]  # PHI is for the authorised client
    assert metadata["00083002"]["Value"] == [str(ct.file_meta.TransferSyntaxUID)]
    path = pixel_uri.split("/dicomweb", 1)[1]
    [pixels] = client.retrieve_bulkdata(web.dicomweb + path)
    assert pixels == ct.PixelData
    # frames: uncompressed from native data, read at their offset
    [frame] = client.retrieve_instance_frames(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, [1]
    )
    assert frame == ct.PixelData
    # a JPEG 2000 frame: decoded unless the client takes the stored syntax
    j2k = datasets[2]
    [decoded] = client.retrieve_instance_frames(
        j2k.StudyInstanceUID, j2k.SeriesInstanceUID, j2k.SOPInstanceUID, [1]
    )
    assert (
        decoded
        == j2k.pixel_array.astype("<u2" if j2k.PixelRepresentation == 0 else "<i2").tobytes()
    )
    [stored] = client.retrieve_instance_frames(
        j2k.StudyInstanceUID,
        j2k.SeriesInstanceUID,
        j2k.SOPInstanceUID,
        [1],
        media_types=(("application/octet-stream", "*"),),
    )
    assert stored == next(pydicom.encaps.generate_frames(j2k.PixelData, number_of_frames=1))


@pytest.mark.parametrize("media_type", ["image/png", "image/jpeg"])
def test_rendered_frames_are_windowed_images(web: WebServer, media_type: str) -> None:
    client = web.client(web.token("RENDER"))
    ct = pydicom.dcmread(sample_file("CT_small.dcm"))
    client.store_instances([ct])
    data = client.retrieve_instance_rendered(
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID, media_types=(media_type,)
    )
    image = Image.open(io.BytesIO(data))
    assert image.format == media_type.split("/")[1].upper()
    assert image.size == (ct.Columns, ct.Rows)
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    # the same window by hand: rescale, then centre 40 width 400 (soft tissue)
    hu = ct.pixel_array * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1) * 255
    rendered = client.retrieve_instance_rendered(
        ct.StudyInstanceUID,
        ct.SeriesInstanceUID,
        ct.SOPInstanceUID,
        media_types=("image/png",),
        params={"window": "40,400"},
    )
    windowed = np.asarray(Image.open(io.BytesIO(rendered)), dtype=np.float64)
    assert np.abs(windowed - expected).max() <= 1.0
    assert grey.std() > 0  # not a blank picture


def test_the_database_keeps_hashes_not_the_accession_number_or_patient_id(web: WebServer) -> None:
    client = web.client(web.token("HASHES"))
    ct = pydicom.dcmread(sample_file("CT_small.dcm"))
    ct.AccessionNumber = "ACC-4711"
    client.store_instances([ct])
    with web.engine.connect() as connection:
        study = connection.execute(select(Study.__table__)).one()
        instances = connection.execute(select(Instance.__table__)).all()
    assert study.accession_number_hash and study.patient_id_hash
    text = repr(study) + repr(instances)
    assert "ACC-4711" not in text and str(ct.PatientID) not in text
    found = client.search_for_studies(search_filters={"AccessionNumber": "ACC-4711"})
    assert [f["0020000D"]["Value"][0] for f in found] == [ct.StudyInstanceUID]
    assert client.search_for_studies(search_filters={"AccessionNumber": "ACC-4712"}) == []
    found = client.search_for_studies(search_filters={"PatientID": str(ct.PatientID)})
    assert len(found) == 1
