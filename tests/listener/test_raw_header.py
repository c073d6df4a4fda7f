"""The header read from the element bytes (raw_header.py) equals pydicom's reading.

Every pydicom storage file we accept, and edge cases made here, are read twice: as the
listener reads them, and with the direct reading switched off (pydicom's path)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

from gateway.dicom import header as header_module
from gateway.dicom.byte_readers import BufferReader
from gateway.dicom.header import InstanceHeader, UnreadableDataset, read_header
from gateway.dicom.raw_header import read_values
from gateway.dicom.structure import TopLevelElement, check_structure
from tests.dicom_samples import ct_instance, dataset_offset, storage_test_files


def body_of(ds: Dataset, transfer_syntax: str) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = transfer_syntax == ImplicitVRLittleEndian
    write_dataset(buffer, ds)
    return buffer.getvalue()


def both_readings(
    body: bytes, transfer_syntax: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[InstanceHeader | str, InstanceHeader | str]:
    def read() -> InstanceHeader | str:
        try:
            return read_header(body, transfer_syntax)
        except UnreadableDataset as exc:
            return f"refused: {exc}"

    direct = read()
    with monkeypatch.context() as patch:
        patch.setattr(header_module, "read_values", lambda body, top_level: None)
        through_pydicom = read()
    return direct, through_pydicom


def took_direct_path(body: bytes, transfer_syntax: str) -> bool:
    top_level: dict[int, TopLevelElement] = {}
    check_structure(
        BufferReader(body),
        implicit_vr=transfer_syntax == ImplicitVRLittleEndian,
        little_endian=True,
        max_depth=32,
        top_level=top_level,
    )
    return read_values(body, top_level) is not None


@pytest.mark.parametrize("path", storage_test_files(), ids=lambda p: Path(p).name)
def test_pydicom_test_files_read_the_same(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = path.read_bytes()
    transfer_syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    body = data[dataset_offset(data) :]
    direct, through_pydicom = both_readings(body, transfer_syntax, monkeypatch)
    assert direct == through_pydicom


def raw(ds: Dataset, tag: int, vr: str, value: bytes) -> None:
    """Set an element's bytes as a sender might, past pydicom's value checks."""
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def edge_case(name: str) -> Dataset:
    ds = ct_instance(generate_uid(), generate_uid(), 3)
    if name == "utf8":
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.StudyDescription = "Thorax Übersicht ÄÖ"
    elif name == "latin1":
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SeriesDescription = "Coupe axiale é"
    elif name == "other-charset":
        ds.SpecificCharacterSet = "ISO_IR 144"
        ds.StudyDescription = "Грудь"
    elif name == "multi-valued-text":
        ds.StudyDescription = "A\\B"
    elif name == "padded":
        ds.Modality = "CT "
        ds.SeriesNumber = " 7 "
        ds.InstanceNumber = "2.0"
        ds.SliceThickness = " 1.5 "
    elif name == "malformed-numbers":
        raw(ds, 0x00200013, "IS", b"2.5 ")  # InstanceNumber
        raw(ds, 0x00200011, "IS", b"x ")  # SeriesNumber
        raw(ds, 0x00180050, "DS", b"thick ")  # SliceThickness
        raw(ds, 0x00200032, "DS", b"0\\1 ")  # ImagePositionPatient: two values of three
    elif name == "empty":
        ds.StudyDescription = ""
        ds.StudyDate = ""
        ds.SeriesNumber = None
        del ds.ImageOrientationPatient
    elif name == "no-sop-instance":
        del ds.SOPInstanceUID
    elif name == "bad-uid":
        ds.StudyInstanceUID = "1.2.abc"
    return ds


@pytest.mark.parametrize(
    "name",
    [
        "plain",
        "utf8",
        "latin1",
        "other-charset",
        "multi-valued-text",
        "padded",
        "malformed-numbers",
        "empty",
        "no-sop-instance",
        "bad-uid",
    ],
)
@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_edge_cases_read_the_same(
    name: str, transfer_syntax: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = body_of(edge_case(name), transfer_syntax)
    direct, through_pydicom = both_readings(body, transfer_syntax, monkeypatch)
    assert direct == through_pydicom
    # the common cases must take the direct path, or the speed-up is gone
    expected_direct = name not in ("other-charset", "multi-valued-text")
    assert took_direct_path(body, transfer_syntax) is expected_direct


def test_direct_values_are_decoded() -> None:
    ds = edge_case("padded")
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.StudyDescription = "Übersicht"
    header = read_header(body_of(ds, ExplicitVRLittleEndian), ExplicitVRLittleEndian)
    assert (header.modality, header.series_number, header.instance_number) == ("CT", 7, 2)
    assert header.slice_thickness == 1.5 and header.study_description == "Übersicht"
    assert header.slice_position == 3.0
