"""Findings as Secondary Capture images (highdicom): one RGB key image per reported finding,
its key slice with the outline and axes (or circle) and its values burned in: the fallback
every viewer shows. Marked derived and not for primary diagnosis in the pixels (the text
band) and the header (ImageType DERIVED\\SECONDARY, BurnedInAnnotation YES, Derivation
Description, Image Comments, Series Description); the source slice in SourceImageSequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import DS

from gateway.results.config import ResultsSettings
from gateway.results.declared import DeclaredFindings
from gateway.results.display import display_pixels, patient_orientation
from gateway.results.identity import ResultUIDs, contributing_equipment, software_versions
from gateway.results.key_image import NOT_FOR_DIAGNOSIS, KeyImage, render_key_image
from gateway.results.source import SourceSeries
from gateway.results.viewer_findings import ViewerFinding, copy_anatomy, viewer_findings

# CID 7202: the source image of an image processing operation.
_SOURCE_FOR_PROCESSING = hd.sr.CodedConcept(
    "121322", "DCM", "Source image for image processing operation"
)


def _source_image(image: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = image.SOPClassUID
    item.ReferencedSOPInstanceUID = image.SOPInstanceUID
    item.PurposeOfReferenceCodeSequence = [_SOURCE_FOR_PROCESSING]
    return item


def _header(sc: Dataset, image: Dataset, finding: ViewerFinding, key: KeyImage) -> None:
    """What marks the image as derived and not for diagnosis, and ties it to its slice."""
    sc.BurnedInAnnotation = "YES"
    sc.DerivationDescription = (
        "Source image windowed to 8 bits and scaled, with an AI finding's outline, "
        f"measurements and '{NOT_FOR_DIAGNOSIS}' burned in"
    )
    sc.ImageComments = f"Derived image, {NOT_FOR_DIAGNOSIS}: AI finding {finding.label}"
    sc.SourceImageSequence = DicomSequence([_source_image(image)])
    if str(image.get("LossyImageCompression", "")) == "01":
        sc.LossyImageCompression = "01"  # once lossy, always lossy (PS3.3 C.7.6.1.1.5)
    orientation = patient_orientation(image)
    sc.PatientOrientation = list(orientation) if orientation is not None else None
    if "PixelSpacing" in image and "ImageOrientationPatient" in image:
        # In-plane spacing of a cross-sectional slice holds in the key image too.
        spacing = np.asarray(image.PixelSpacing, dtype=np.float64)
        sc.PixelSpacing = [
            DS(spacing[0] / key.scale[1], auto_format=True),
            DS(spacing[1] / key.scale[0], auto_format=True),
        ]
    copy_anatomy(image, sc)


def _secondary_capture(
    number: int,
    finding: ViewerFinding,
    grey: NDArray[np.uint8],
    image: Dataset,
    item: DeclaredFindings,
    uids: ResultUIDs,
    settings: ResultsSettings,
) -> Dataset:
    key = render_key_image(grey, finding)
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=image,
        pixel_array=key.pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        series_instance_uid=uids.sc_series,
        series_number=settings.sc_series_number,
        sop_instance_uid=uids.sc_instance(finding.key),
        instance_number=number,
        manufacturer=settings.manufacturer,
        # highdicom needs letters it knows; the exact (oblique) ones are set below
        patient_orientation=("L", "P"),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=contributing_equipment(settings, item),
        series_description=settings.sc_series_description,
        manufacturer_model_name=settings.manufacturer_model_name,
        software_versions=list(software_versions(item.findings)),
        device_serial_number=settings.device_serial_number,
        institution_name=settings.institution_name,
    )
    _header(sc, image, finding, key)
    return sc


def build_secondary_captures(
    source: SourceSeries,
    item: DeclaredFindings,
    uids: ResultUIDs,
    settings: ResultsSettings,
    drawn: Sequence[ViewerFinding] | None = None,
) -> list[Dataset]:
    """One key image per reported finding, in the findings' order (instance numbers from
    1); none without a reported finding. The key slices' pixels are read from the source
    datasets, or from the files they were read from when they hold headers only.
    `drawn`: `viewer_findings(source, item, settings)` when the caller builds several forms
    (it labels the findings' components once for all)."""
    findings = list(drawn) if drawn is not None else viewer_findings(source, item, settings)
    greys: dict[int, NDArray[np.uint8]] = {}
    images = []
    for number, finding in enumerate(findings, start=1):
        image = source.datasets[finding.key_slice]
        if finding.key_slice not in greys:
            greys[finding.key_slice] = display_pixels(image)
        grey = greys[finding.key_slice]
        images.append(_secondary_capture(number, finding, grey, image, item, uids, settings))
    return images
