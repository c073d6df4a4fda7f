"""QIDO-RS matching over received and produced objects: UIDs, StudyDate ranges,
ModalitiesInStudy, Modality, SOP class, the hashed AccessionNumber and PatientID (exact
only), limit and offset, includefield, and the warnings for what is not supported."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ComprehensiveSRStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from gateway.dicom.spool import Spool
from tests.dicom_samples import ct_instance, encode
from tests.dicomweb.server import WebServer
from tests.dicomweb.stow_helpers import parse_multipart_reply, stow


def _instance(
    study: str, series: str, *, date: str, modality: str, accession: str, patient: str
) -> Dataset:
    ds = ct_instance(study, series, 0, rows=8, columns=8)
    ds.StudyDate, ds.AccessionNumber, ds.PatientID = date, accession, patient
    if modality == "MR":
        ds.Modality = "MR"
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    return ds


@pytest.fixture
def held(web: WebServer) -> dict[str, Dataset]:
    """Three studies: A (CT, 2026-01-10), B (CT + MR, 2026-03-05), C (MR, 2025-12-31)."""
    secret = web.token("LOADER")
    made: dict[str, Dataset] = {}
    for name, date, modalities in (
        ("A", "20260110", ["CT"]),
        ("B", "20260305", ["CT", "MR"]),
        ("C", "20251231", ["MR"]),
    ):
        study = generate_uid()
        for index, modality in enumerate(modalities):
            ds = _instance(
                study,
                generate_uid(),
                date=date,
                modality=modality,
                accession=f"ACC-{name}",
                patient=f"PID-{name}",
            )
            made[f"{name}{index}"] = ds
        reply = stow(web, [encode(made[f"{name}{i}"]) for i in range(len(modalities))], secret)
        assert reply.status == 200
    return made


def _get(web: WebServer, path: str, **params: str) -> requests.Response:
    secret = web.token(
        f"Q{generate_uid()[-10:]}",
    )
    return requests.get(
        web.dicomweb + path,
        params=params,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )


def _studies(reply: requests.Response) -> set[str]:
    assert reply.status_code == 200, reply.text
    return {item["0020000D"]["Value"][0] for item in reply.json()}


def _uid(held: dict[str, Dataset], key: str) -> str:
    return str(held[key].StudyInstanceUID)


def test_study_dates_and_ranges(web: WebServer, held: dict[str, Dataset]) -> None:
    a, b, c = _uid(held, "A0"), _uid(held, "B0"), _uid(held, "C0")
    assert _studies(_get(web, "/studies", StudyDate="20260110")) == {a}
    assert _studies(_get(web, "/studies", StudyDate="20260101-20261231")) == {a, b}
    assert _studies(_get(web, "/studies", StudyDate="-20260110")) == {a, c}
    assert _studies(_get(web, "/studies", StudyDate="20260111-")) == {b}
    assert _get(web, "/studies", StudyDate="2026-01-10").status_code == 400


def test_modalities_accession_number_and_patient_id(
    web: WebServer, held: dict[str, Dataset]
) -> None:
    a, b, c = _uid(held, "A0"), _uid(held, "B0"), _uid(held, "C0")
    assert _studies(_get(web, "/studies", ModalitiesInStudy="MR")) == {b, c}
    assert _studies(_get(web, "/studies", ModalitiesInStudy="CT,MR")) == {a, b, c}
    assert _studies(_get(web, "/studies", AccessionNumber="ACC-B")) == {b}
    assert _studies(_get(web, "/studies", PatientID="PID-C")) == {c}
    assert _studies(_get(web, "/studies", **{"00100020": "PID-A"})) == {a}  # by tag
    assert _studies(_get(web, "/studies", PatientID="PID-B", StudyDate="20251231")) == set()
    refused = _get(web, "/studies", PatientID="PID-*")
    assert refused.status_code == 400 and "keyed hash" in refused.text
    # every study-level attribute comes from the stored header
    [answer] = _get(web, "/studies", AccessionNumber="ACC-B").json()
    assert answer["00080061"]["Value"] == ["CT", "MR"]
    assert answer["00201206"]["Value"] == [2] and answer["00201208"]["Value"] == [2]
    assert answer["00100020"]["Value"] == ["PID-B"]
    assert answer["00100010"]["Value"][0]["Alphabetic"] == str(held["B0"].PatientName)


def test_series_and_instances(web: WebServer, held: dict[str, Dataset]) -> None:
    b = _uid(held, "B0")
    series = _get(web, f"/studies/{b}/series").json()
    assert sorted(s["00080060"]["Value"][0] for s in series) == ["CT", "MR"]
    mr_series = _get(web, "/series", Modality="MR").json()
    assert {s["0020000D"]["Value"][0] for s in mr_series} == {b, _uid(held, "C0")}
    assert all("00100020" in s for s in mr_series)  # study attributes at /series
    mr = held["B1"]
    instances = _get(
        web, f"/studies/{b}/series/{mr.SeriesInstanceUID}/instances", SOPClassUID=MRImageStorage
    ).json()
    assert [i["00080018"]["Value"][0] for i in instances] == [str(mr.SOPInstanceUID)]
    assert instances[0]["00081190"]["Value"][0].endswith(f"/instances/{mr.SOPInstanceUID}")
    two = ",".join(str(held[k].SOPInstanceUID) for k in ("A0", "C0"))
    found = _get(web, "/instances", SOPInstanceUID=two).json()
    assert len(found) == 2
    assert _get(web, f"/studies/{b}/instances", Modality="CT").json()[0]["00080060"]["Value"] == [
        "CT"
    ]


def test_limit_offset_includefield_and_warnings(web: WebServer, held: dict[str, Dataset]) -> None:
    everything = _studies(_get(web, "/studies"))
    first = _get(web, "/studies", limit="2")
    assert len(first.json()) == 2
    assert "additional results" in first.headers["Warning"]
    rest = _get(web, "/studies", limit="2", offset="2")
    assert _studies(first) | _studies(rest) == everything and "Warning" not in rest.headers
    assert _get(web, "/studies", offset="9").json() == []
    fields = _get(web, "/studies", includefield="StudyDescription,00080080").json()[0]
    assert "00081030" in fields
    full = _get(web, f"/studies/{_uid(held, 'A0')}/instances", includefield="all").json()[0]
    assert "00180050" in full and "7FE00010" not in full  # slice thickness; never pixels
    fuzzy = _get(web, "/studies", fuzzymatching="true", PatientName="DOE*")
    warnings = fuzzy.headers["Warning"]
    assert "fuzzymatching parameter is not supported" in warnings
    assert "PatientName query parameter is not supported" in warnings
    assert _studies(fuzzy) == everything  # ignored, not guessed at
    assert _get(web, "/studies", limit="ten").status_code == 400


def _store_produced_sr(web: WebServer, study: str) -> Dataset:
    """An SR where the pipeline's results go: results_dir/<study>/<series>/<sop>.dcm."""
    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID = ComprehensiveSRStorage
    sr.SOPInstanceUID = sr.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sr.StudyInstanceUID, sr.SeriesInstanceUID = study, generate_uid()
    sr.Modality, sr.SeriesNumber, sr.InstanceNumber = "SR", 99, 1
    Spool(web.settings.results_dir, min_free_bytes=0).write(
        study, str(sr.SeriesInstanceUID), str(sr.SOPInstanceUID), (encode(sr),)
    )
    return sr


def test_produced_objects_are_found_and_retrieved(web: WebServer, held: dict[str, Dataset]) -> None:
    a = _uid(held, "A0")
    sr = _store_produced_sr(web, a)
    assert _studies(_get(web, "/studies", ModalitiesInStudy="SR")) == {a}
    [study] = _get(web, "/studies", StudyInstanceUID=a).json()
    assert study["00080061"]["Value"] == ["CT", "SR"]
    assert study["00201206"]["Value"] == [2] and study["00201208"]["Value"] == [2]
    series = {s["00080060"]["Value"][0]: s for s in _get(web, f"/studies/{a}/series").json()}
    assert series["SR"]["0020000E"]["Value"] == [str(sr.SeriesInstanceUID)]
    found = _get(web, "/instances", SOPClassUID=ComprehensiveSRStorage).json()
    assert [i["00080018"]["Value"][0] for i in found] == [str(sr.SOPInstanceUID)]
    reply = _get(web, f"/studies/{a}/series/{sr.SeriesInstanceUID}")
    [(_, payload)] = parse_multipart_reply(reply)
    assert payload == encode(sr)
    metadata = _get(web, f"/studies/{a}/series/{sr.SeriesInstanceUID}/metadata").json()
    assert metadata[0]["00080060"]["Value"] == ["SR"]
    # a rerun that wrote the same object again: listed once, the newer file
    path = Path(web.settings.results_dir, a, str(sr.SeriesInstanceUID))
    assert len(list(path.glob("*.dcm"))) == 1
    _store_produced_sr_again = Spool(web.settings.results_dir, min_free_bytes=0)
    sr.SeriesNumber = 98
    _store_produced_sr_again.write(
        a, str(sr.SeriesInstanceUID), str(sr.SOPInstanceUID), (encode(sr),)
    )
    again = _get(web, f"/studies/{a}/series/{sr.SeriesInstanceUID}/instances").json()
    assert len(again) == 1 and again[0]["00200011"]["Value"] == [98]
    assert pydicom.dcmread(next(path.glob("*.dcm"))).Modality == "SR"
