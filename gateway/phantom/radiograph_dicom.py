"""Write a synthetic chest radiograph as a DX (For Presentation) or CR DICOM instance."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Literal

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

from gateway.phantom.dicom import _ds_number
from gateway.phantom.radiograph import Radiograph

RadiographModality = Literal["DX", "CR"]

SOP_CLASSES = {
    "DX": DigitalXRayImageStorageForPresentation,
    "CR": ComputedRadiographyImageStorage,
}


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def radiograph_dataset(
    radiograph: Radiograph,
    *,
    modality: RadiographModality = "DX",
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
    accession_number: str = "",
    series_number: int = 1,
    instance_number: int = 1,
    study_datetime: datetime.datetime | None = None,
) -> Dataset:
    """The DICOM dataset (with file meta) of ``radiograph``.

    DX: Digital X-Ray Image Storage - For Presentation, ImagerPixelSpacing only (the
    detector plane). CR: Computed Radiography Image Storage with PixelSpacing as older
    CR readers write it, and ImagerPixelSpacing. Both: ViewPosition PA/AP, BodyPartExamined
    CHEST, PatientOrientation L\\F (R\\F when mirrored), MONOCHROME1 or MONOCHROME2 as the
    radiograph was rendered.
    """
    geometry = radiograph.geometry
    exposure = radiograph.exposure
    when = study_datetime or datetime.datetime(2024, 1, 1, 9, 0, 0)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    # Patient
    ds.PatientName = f"PHANTOM^XR{radiograph.seed}"
    ds.PatientID = f"XR{radiograph.seed}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    # Study
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.StudyDate = when.strftime("%Y%m%d")
    ds.StudyTime = when.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = accession_number
    ds.StudyDescription = "XR CHEST PHANTOM"
    # Series
    ds.Modality = modality
    ds.SeriesInstanceUID = series_instance_uid or generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDate = ds.StudyDate
    ds.SeriesTime = ds.StudyTime
    ds.SeriesDescription = f"Synthetic chest {geometry.view_position}"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = geometry.view_position
    # Equipment
    ds.Manufacturer = "PACS AI gateway phantom"
    ds.ManufacturerModelName = "gateway.phantom.radiograph"
    # General image
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = list(radiograph.patient_orientation)
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AcquisitionDate = ds.StudyDate
    ds.AcquisitionTime = ds.StudyTime
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    # Image pixel
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = exposure.photometric_interpretation
    ds.Rows = geometry.rows
    ds.Columns = geometry.columns
    ds.BitsAllocated = 16
    ds.BitsStored = exposure.bits_stored
    ds.HighBit = exposure.bits_stored - 1
    ds.PixelRepresentation = 0
    # Acquisition (DX positioning, CR image)
    ds.KVP = "120" if geometry.view_position == "PA" else "100"
    spacing = [_ds_number(geometry.spacing_mm)] * 2
    ds.ImagerPixelSpacing = spacing
    ds.DistanceSourceToDetector = _ds_number(geometry.source_to_detector_mm)
    ds.DistanceSourceToPatient = _ds_number(
        geometry.source_to_detector_mm / radiograph.magnification
    )
    # Modality and VOI LUT: the stored values are already the presentation values.
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    top = radiograph.max_value
    ds.WindowCenter = _ds_number((top + 1) / 2.0)
    ds.WindowWidth = _ds_number(top + 1)
    monochrome1 = exposure.photometric_interpretation == "MONOCHROME1"
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = "U"
        ds.AnatomicRegionSequence = [_code("43799004", "SCT", "Chest")]
        ds.ViewCodeSequence = [
            _code("399348003", "SCT", "postero-anterior")
            if geometry.view_position == "PA"
            else _code("272479001", "SCT", "antero-posterior")
        ]
        ds.AcquisitionContextSequence = []
        ds.PixelIntensityRelationship = "LOG"
        # +1: lower values mean less X-ray intensity at the detector (MONOCHROME1 here).
        ds.PixelIntensityRelationshipSign = 1 if monochrome1 else -1
        ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
        ds.DetectorType = "SCINTILLATOR"
        ds.PositionerType = "NONE"
        ds.EstimatedRadiographicMagnificationFactor = _ds_number(radiograph.magnification)
    else:
        ds.PixelSpacing = spacing
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "detector plane"
        ds.PlateType = "PHANTOM"
    ds.PixelData = radiograph.pixels.astype("<u2", copy=False).tobytes()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write_radiograph(
    radiograph: Radiograph,
    path: Path | str,
    *,
    modality: RadiographModality = "DX",
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    accession_number: str = "",
    study_datetime: datetime.datetime | None = None,
) -> Path:
    """Write ``radiograph`` as one DX or CR file (Explicit VR Little Endian) at ``path``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds = radiograph_dataset(
        radiograph,
        modality=modality,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        accession_number=accession_number,
        study_datetime=study_datetime,
    )
    ds.save_as(out, enforce_file_format=True)
    return out
