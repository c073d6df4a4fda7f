"""Small, valid DICOM instances for integration tests: synthetic CT slices, and pydicom's
test files in compressed and other transfer syntaxes re-identified with fresh UIDs (several of
them share one SOP Instance UID, which a PACS would merge into one instance)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

# pydicom test file -> what it exercises. All small (< 100 kB).
COMPRESSED_TEST_FILES: tuple[str, ...] = (
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline (Process 1)
    "JPEGLSNearLossless_16.dcm",  # JPEG-LS near-lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 lossless
    "MR_small_RLE.dcm",  # RLE lossless
)
# Uncompressed syntaxes other than Explicit VR Little Endian.
OTHER_SYNTAX_TEST_FILES: tuple[str, ...] = (
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian
    "MR_small_bigendian.dcm",  # Explicit VR Big Endian
    "MR_small_implicit.dcm",  # Implicit VR Little Endian
)


@dataclass(frozen=True)
class MadeInstance:
    """One instance written by the factory: its UIDs and the file bytes."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    transfer_syntax_uid: str
    data: bytes

    def write(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.sop_instance_uid}.dcm"
        path.write_bytes(self.data)
        return path


def _encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _made(ds: Dataset) -> MadeInstance:
    data = _encode(ds)
    return MadeInstance(
        sop_instance_uid=str(ds.SOPInstanceUID),
        sop_class_uid=str(ds.SOPClassUID),
        series_instance_uid=str(ds.SeriesInstanceUID),
        study_instance_uid=str(ds.StudyInstanceUID),
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        data=data,
    )


def ct_series(
    count: int,
    *,
    study_instance_uid: str | None = None,
    size: int = 16,
    patient_id: str = "GW-TEST-0001",
) -> list[MadeInstance]:
    """`count` axial CT slices (Explicit VR Little Endian, `size`x`size` int16) of one series."""
    study_uid = study_instance_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = generate_uid()
    made = []
    for number in range(1, count + 1):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName = "Test^Integration"
        ds.PatientID = patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyDate = "20260101"
        ds.StudyTime = "120000"
        ds.AccessionNumber = "ACC0001"
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.StudyDescription = "Integration CT"
        ds.Modality = "CT"
        ds.Manufacturer = "pacs-gateway tests"
        ds.BodyPartExamined = "CHEST"
        ds.SeriesDescription = "Axial 5mm"
        ds.SeriesNumber = 1
        ds.InstanceNumber = number
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SliceThickness = 5.0
        ds.PixelSpacing = [0.8, 0.8]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * (number - 1)]
        ds.SliceLocation = 5.0 * (number - 1)
        ds.KVP = 120
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = size
        ds.Columns = size
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        pixels = (np.arange(size * size, dtype=np.int16).reshape(size, size) + number * 7) % 2000
        ds.PixelData = pixels.astype("<i2").tobytes()
        made.append(_made(ds))
    return made


def reidentified_test_file(name: str, study_instance_uid: str) -> MadeInstance:
    """pydicom's test file `name`, its pixel data untouched, with new series and instance UIDs
    in the given study. The transfer syntax stays the file's own.

    Two quirks of the test files are normalised, because DCMTK-based senders (Orthanc,
    storescu) normalise them on the wire and the tests compare stored bytes with sent ones:
    encapsulated Pixel Data written with VR OW becomes OB (as PS3.5 A.4 requires), and the
    (FFFC,FFFC) Data Set Trailing Padding element is removed (DCMTK never sends it)."""
    path = get_testdata_file(name)
    if path is None:
        raise FileNotFoundError(f"expected pydicom test file {name}, found none")
    ds = dcmread(path)
    ds.StudyInstanceUID = study_instance_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = "GW-TEST-0001"
    ds.PatientName = "Test^Integration"
    if "DataSetTrailingPadding" in ds:
        del ds.DataSetTrailingPadding
    if ds.file_meta.TransferSyntaxUID.is_encapsulated and "PixelData" in ds:
        ds["PixelData"].VR = "OB"
    return _made(ds)


def mixed_study(ct_count: int, extra_files: tuple[str, ...]) -> list[MadeInstance]:
    """One study: `ct_count` CT slices plus one re-identified instance per test file."""
    ct = ct_series(ct_count)
    study_uid = ct[0].study_instance_uid
    return ct + [reidentified_test_file(name, study_uid) for name in extra_files]


def dataset_body(data: bytes) -> bytes:
    """The bytes after the preamble and the File Meta Information (group 0002, always
    Explicit VR Little Endian), i.e. the dataset as it travels in a C-STORE."""
    if data[128:132] != b"DICM":
        raise ValueError("expected 'DICM' at offset 128, found none")
    offset = 132
    while offset + 8 <= len(data):
        group, _element = struct.unpack_from("<HH", data, offset)
        if group != 0x0002:
            break
        vr = data[offset + 4 : offset + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            (length,) = struct.unpack_from("<I", data, offset + 8)
            offset += 12 + length
        else:
            (length,) = struct.unpack_from("<H", data, offset + 6)
            offset += 8 + length
    return data[offset:]


def meta_transfer_syntax(data: bytes) -> UID:
    return UID(dcmread(BytesIO(data), stop_before_pixels=True).file_meta.TransferSyntaxUID)
