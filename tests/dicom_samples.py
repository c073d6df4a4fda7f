"""Small real DICOM inputs for tests: synthetic CT instances and pydicom's test files."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom.data
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_file_meta_info
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AllStoragePresentationContexts

from gateway.dicom.listener import SUPPORTED_TRANSFER_SYNTAXES

STORAGE_SOP_CLASSES = {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts}
TEST_FILES_DIR = Path(pydicom.data.__file__).parent / "test_files"
SECRET_PATIENT_NAME = "SECRETPERSON^NEVERLOGGED"
SECRET_PATIENT_ID = "PID-8675309"


def ct_instance(
    study_uid: str,
    series_uid: str,
    index: int,
    *,
    rows: int = 64,
    columns: int = 64,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """A small but complete CT Image Storage instance (Explicit VR Little Endian)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid(prefix="1.2.826.0.1.3680043.8.498.1.")
    ds.PatientName = SECRET_PATIENT_NAME
    ds.PatientID = SECRET_PATIENT_ID
    ds.Modality = "CT"
    ds.BodyPartExamined = "CHEST"
    ds.StudyDescription = "CT CHEST"
    ds.SeriesDescription = "AXIAL 1mm"
    ds.StudyDate = "20261121"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.SliceThickness = 1.0
    ds.ImagePositionPatient = [0.0, 0.0, float(index)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.7, 0.7]
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    rng = np.random.default_rng(index)
    ds.PixelData = rng.integers(0, 2000, (rows, columns), dtype=np.int16).tobytes()
    return ds


def encode(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_series(folder: Path, count: int, **kwargs: object) -> list[Path]:
    study_uid, series_uid = generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        ds = ct_instance(study_uid, series_uid, index, **kwargs)  # type: ignore[arg-type]
        path = folder / f"{index:04d}.dcm"
        path.write_bytes(encode(ds))
        paths.append(path)
    return paths


def dataset_offset(data: bytes) -> int:
    """Where the dataset starts after preamble and file meta."""
    buffer = BytesIO(data)
    read_file_meta_info_from(buffer)
    return buffer.tell()


def read_file_meta_info_from(buffer: BytesIO) -> Dataset:
    from pydicom.filereader import _read_file_meta_info, read_preamble

    read_preamble(buffer, False)
    return _read_file_meta_info(buffer)


def storage_test_files() -> list[Path]:
    """pydicom's test files that are storage instances in a transfer syntax we accept."""
    found = []
    # Only the files shipped inside pydicom: get_testdata_files() would try to download more.
    for path in sorted(TEST_FILES_DIR.glob("*.dcm")):
        try:
            meta = read_file_meta_info(path)
            ds = dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        ts = str(meta.get("TransferSyntaxUID", ""))
        if (
            ts in SUPPORTED_TRANSFER_SYNTAXES
            and str(ds.get("SOPClassUID", "")) in STORAGE_SOP_CLASSES
            and "SOPInstanceUID" in ds
            and "StudyInstanceUID" in ds
            and "SeriesInstanceUID" in ds
        ):
            found.append(path)
    return found


def testdata(name: str) -> Path:
    path = TEST_FILES_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"expected {name} among pydicom's bundled test files")
    return path
