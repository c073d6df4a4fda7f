"""Findings as a Key Object Selection Document (highdicom, TID 2010): the key image of each
reported finding flagged "Of Interest" (DCM 113000, CID 7010), with a Key Object Description
naming each finding, its values and the image it is on (no patient data), and this gateway
as the observer device."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from gateway.results.config import ResultsSettings
from gateway.results.declared import DeclaredFindings
from gateway.results.identity import ResultUIDs, contributing_equipment, device_observer_context
from gateway.results.key_image import NOT_FOR_DIAGNOSIS
from gateway.results.source import SourceSeries
from gateway.results.viewer_findings import ViewerFinding, viewer_findings

OF_INTEREST = codes.DCM.OfInterest


def _image_name(image: Dataset, index: int) -> str:
    number = image.get("InstanceNumber")
    return f"image {number}" if number not in (None, "") else f"slice {index + 1}"


def key_object_description(
    findings: list[ViewerFinding], source: SourceSeries, item: DeclaredFindings
) -> str:
    """'AI findings (Lung and lung nodules on chest CT), NOT FOR PRIMARY DIAGNOSIS: Nodule 1
    (6.2 x 4.5 mm, 66 mm3) on image 13; Nodule 2 (...) on image 8.'"""
    parts = []
    for finding in findings:
        values = f" ({finding.values})" if finding.values else ""
        where = _image_name(source.datasets[finding.key_slice], finding.key_slice)
        parts.append(f"{finding.title}{values} on {where}")
    return f"AI findings ({item.description.title}), {NOT_FOR_DIAGNOSIS}: {'; '.join(parts)}."


def build_key_object_selection(
    source: SourceSeries,
    item: DeclaredFindings,
    uids: ResultUIDs,
    settings: ResultsSettings,
    drawn: Sequence[ViewerFinding] | None = None,
) -> Dataset | None:
    """The KOS flagging each reported finding's key image (each image once, in the
    findings' order), or None when no finding is reported. `drawn`: `viewer_findings(source,
    item, settings)` when the caller builds several forms (it labels the findings'
    components once for all)."""
    findings = list(drawn) if drawn is not None else viewer_findings(source, item, settings)
    if not findings:
        return None
    key_slices = list(dict.fromkeys(f.key_slice for f in findings))
    images = [source.datasets[index] for index in key_slices]
    content = hd.ko.KeyObjectSelection(
        document_title=OF_INTEREST,
        referenced_objects=images,
        observer_device_context=device_observer_context(uids, settings),
        description=key_object_description(findings, source, item),
    )
    document = hd.ko.KeyObjectSelectionDocument(
        evidence=images,
        content=content,
        series_instance_uid=uids.ko_series,
        series_number=settings.ko_series_number,
        sop_instance_uid=uids.ko_instance,
        instance_number=1,
        manufacturer=settings.manufacturer,
        institution_name=settings.institution_name,
        contributing_equipment=contributing_equipment(settings, item),
        series_description=settings.ko_series_description,
    )
    _without_purpose_of_reference(document)
    return document


def _without_purpose_of_reference(document: Dataset) -> None:
    """TID 2010 gives the selected objects no concept name (PixelMed: 'Purpose of Reference
    is forbidden for IMAGE content item'); highdicom names them SCT 260753009 "Source".
    Concept Name Code Sequence is optional on IMAGE items (PS3.3 C.17.3)."""
    for content_item in document.ContentSequence:
        if content_item.ValueType in ("IMAGE", "COMPOSITE", "WAVEFORM"):
            del content_item.ConceptNameCodeSequence
