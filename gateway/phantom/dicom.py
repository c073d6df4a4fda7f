"""Write a phantom as a CT Image Storage series (one file per slice)."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)

from gateway.phantom.volume import Phantom

RESCALE_INTERCEPT = -1024
_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


def write_ct_series(
    phantom: Phantom,
    out_dir: Path | str,
    *,
    head_first: bool = True,
    transfer_syntax: str = ExplicitVRLittleEndian,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    series_number: int = 1,
    accession_number: str = "",
    study_datetime: datetime.datetime | None = None,
) -> list[Path]:
    """Write ``phantom`` as CT Image Storage files in ``out_dir``.

    Returns the file paths in phantom slice order (index 0 = most inferior slice), whatever
    the instance numbering. Head first: ImageOrientationPatient (1,0,0, 0,1,0), patient
    position HFS, instance 1 at the head. Feet first: (-1,0,0, 0,1,0) with the columns
    stored mirrored so that the anatomy stays in place, FFS, instance 1 at the feet.
    Compressed transfer syntaxes (RLE Lossless, JPEG 2000 Lossless, ...) use
    ``Dataset.compress`` and need its encoders.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ts = UID(transfer_syntax)
    n_z, n_y, n_x = phantom.shape
    dz, dy, dx = phantom.spacing
    when = study_datetime or datetime.datetime(2024, 1, 1, 8, 0, 0)
    study_uid = study_instance_uid or generate_uid()
    series_uid = series_instance_uid or generate_uid()
    for_uid = frame_of_reference_uid or generate_uid()
    ox, oy, oz = phantom.patient_origin
    if head_first:
        iop = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        x_first = ox
    else:
        iop = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        x_first = ox + (n_x - 1) * dx

    stored_all = (phantom.hu.astype(np.int32) - RESCALE_INTERCEPT).astype(np.uint16)
    paths: list[Path] = []
    for k in range(n_z):
        instance_number = (n_z - k) if head_first else (k + 1)
        pixels = stored_all[k] if head_first else stored_all[k, :, ::-1]
        z = oz + k * dz
        ds = _ct_dataset(phantom, when)
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = for_uid
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesNumber = series_number
        ds.AccessionNumber = accession_number
        ds.InstanceNumber = instance_number
        ds.PatientPosition = "HFS" if head_first else "FFS"
        ds.ImageOrientationPatient = [_ds_number(v) for v in iop]
        ds.ImagePositionPatient = [_ds_number(x_first), _ds_number(oy), _ds_number(z)]
        ds.SliceLocation = _ds_number(z)
        ds.SliceThickness = _ds_number(dz)
        ds.PixelSpacing = [_ds_number(dy), _ds_number(dx)]
        ds.Rows = n_y
        ds.Columns = n_x
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()

        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        if ts not in _UNCOMPRESSED:
            ds.compress(ts)
        elif ts == ImplicitVRLittleEndian:
            meta.TransferSyntaxUID = ImplicitVRLittleEndian
        path = out / f"CT{k + 1:05d}.dcm"
        ds.save_as(path, enforce_file_format=True, implicit_vr=ts == ImplicitVRLittleEndian)
        paths.append(path)
    return paths


def _ds_number(value: float) -> str:
    """A decimal string of at most 16 characters."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    return text[:16]


def _ct_dataset(phantom: Phantom, when: datetime.datetime) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    # Patient
    ds.PatientName = f"PHANTOM^{phantom.seed}"
    ds.PatientID = f"PH{phantom.seed}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    # Study
    ds.StudyDate = when.strftime("%Y%m%d")
    ds.StudyTime = when.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.StudyDescription = "CT CHEST PHANTOM"
    # Series
    ds.Modality = "CT"
    ds.SeriesDescription = "Synthetic chest phantom"
    ds.BodyPartExamined = "CHEST"
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime
    # Frame of reference, equipment
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "PACS AI gateway phantom"
    ds.ManufacturerModelName = "gateway.phantom"
    # General image / acquisition
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AcquisitionNumber = 1
    ds.KVP = "120"
    # Image pixel / CT image
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = str(RESCALE_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1500"
    return ds
