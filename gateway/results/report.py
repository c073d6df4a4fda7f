"""Findings to a Comprehensive 3D SR with a TID 1500 Measurement Report (highdicom): one
volumetric group per reported segment finding, one group per image-level finding, as the
pipeline declares them."""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset

from gateway.pipelines.description import PipelineDescription
from gateway.pipelines.findings import ImageFinding, PipelineFindings, SegmentFinding
from gateway.results import codes
from gateway.results.config import ResultsSettings
from gateway.results.declared import ConvertibleFindings, DeclaredFindings, code, declared
from gateway.results.identity import (
    ResultUIDs,
    contributing_equipment,
    model_of,
    sr_algorithm,
)
from gateway.results.segmentation import segment_title
from gateway.results.source import SourceSeries


def _observation_context(uids: ResultUIDs, settings: ResultsSettings) -> hd.sr.ObservationContext:
    device = hd.sr.ObserverContext(
        observer_type=codes.codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=uids.device_observer,
            name=settings.manufacturer_model_name,
            manufacturer_name=settings.manufacturer,
            model_name=settings.manufacturer_model_name,
            serial_number=settings.device_serial_number,
        ),
    )
    return hd.sr.ObservationContext(observer_device_context=device)


def _segment_group(
    segment: SegmentFinding,
    segment_number: int,
    seg: hd.seg.Segmentation,
    source: SourceSeries,
    item: DeclaredFindings,
    uids: ResultUIDs,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    assert item.description.segmentation is not None  # segments imply a segmentation
    algorithm = sr_algorithm(model_of(item, item.description.segmentation.model))
    declared_segment = item.description.segment(segment.label)
    region = declared_segment.anatomic_region
    measurements = []
    for name in declared_segment.measurements:
        measured = segment.measurement(name)
        if measured is None:
            continue
        concept = codes.MEASUREMENTS[name]
        measurements.append(
            hd.sr.Measurement(
                name=concept.name,
                value=round(measured.value, 1),
                unit=concept.unit,
                derivation=concept.derivation,
                algorithm_id=algorithm,
            )
        )
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.tracking(segment.key), identifier=segment_title(item.description, segment)
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=segment_number,
            source_series=hd.sr.SourceSeriesForSegmentation(str(source.first.SeriesInstanceUID)),
        ),
        finding_type=code(declared_segment.type),
        finding_category=code(declared_segment.category),
        finding_sites=None
        if region is None
        else [hd.sr.FindingSite(anatomic_location=code(region))],
        algorithm_id=algorithm,
        measurements=measurements,
    )


def _image_group(
    finding: ImageFinding, item: DeclaredFindings, uids: ResultUIDs
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    declared_finding = item.description.classification
    assert declared_finding is not None and declared_finding.name == finding.name
    algorithm = sr_algorithm(model_of(item, declared_finding.model))
    finding_code = code(declared_finding.finding)
    site = declared_finding.finding_site
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.tracking("classification"), identifier=declared_finding.title
        ),
        finding_type=finding_code,
        finding_sites=None if site is None else [hd.sr.FindingSite(anatomic_location=code(site))],
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(
                name=codes.PROBABILITY,
                value=round(finding.probability, 4),
                unit=codes.NO_UNITS,
                algorithm_id=algorithm,
            )
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=finding_code, value=codes.PRESENT if finding.present else codes.ABSENT
            )
        ],
    )


def build_measurement_report(
    source: SourceSeries,
    findings: PipelineFindings | ConvertibleFindings,
    seg: tuple[hd.seg.Segmentation, list[str]] | None,
    uids: ResultUIDs,
    settings: ResultsSettings,
    description: PipelineDescription | None = None,
) -> hd.sr.Comprehensive3DSR:
    item = declared(findings, description)
    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    evidence: list[Dataset] = list(source.datasets)
    if seg is not None:
        seg_dataset, structures = seg
        evidence.append(seg_dataset)
        for segment in item.findings.segments:
            if item.description.segment(segment.label).report and segment.key in structures:
                number = structures.index(segment.key) + 1
                groups.append(_segment_group(segment, number, seg_dataset, source, item, uids))
    groups.extend(_image_group(f, item, uids) for f in item.findings.image_findings)
    report = item.description.report
    content = hd.sr.MeasurementReport(
        observation_context=_observation_context(uids, settings),
        procedure_reported=code(report.procedure),
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=content,
        series_instance_uid=uids.sr_series,
        series_number=settings.sr_series_number,
        sop_instance_uid=uids.sr_instance,
        instance_number=1,
        manufacturer=settings.manufacturer,
        institution_name=settings.institution_name,
        # An algorithm's report: complete, but no person has verified it.
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=report.sr_series_description,
        contributing_equipment=contributing_equipment(settings, item),
    )
