"""Findings to a Comprehensive 3D SR with a TID 1500 Measurement Report (highdicom)."""

from __future__ import annotations

import highdicom as hd
from pydicom.dataset import Dataset

from gateway.results import codes
from gateway.results.config import ResultsSettings
from gateway.results.identity import ResultUIDs, contributing_equipment, sr_algorithm
from gateway.results.segmentation import nodule_tracking_id
from gateway.results.source import SourceSeries
from workers.inference.findings import Findings, NoduleFinding


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


def _nodule_group(
    nodule: NoduleFinding,
    segment_number: int,
    seg: hd.seg.Segmentation,
    source: SourceSeries,
    findings: Findings,
    uids: ResultUIDs,
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    algorithm = sr_algorithm(findings.segmentation_model)
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.tracking(f"nodule-{nodule.index}"),
            identifier=nodule_tracking_id(nodule.index),
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=segment_number,
            source_series=hd.sr.SourceSeriesForSegmentation(str(source.first.SeriesInstanceUID)),
        ),
        finding_type=codes.NODULE,
        finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.LUNG)],
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(
                name=codes.VOLUME,
                value=round(nodule.volume_mm3, 1),
                unit=codes.CUBIC_MILLIMETER,
                algorithm_id=algorithm,
            ),
            hd.sr.Measurement(
                name=codes.DIAMETER,
                value=round(nodule.longest_diameter_mm, 1),
                unit=codes.MILLIMETER,
                derivation=codes.MAXIMUM,
                algorithm_id=algorithm,
            ),
        ],
    )


def _classification_group(
    findings: Findings, uids: ResultUIDs, settings: ResultsSettings
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    algorithm = sr_algorithm(findings.classification_model)
    present = findings.nodule_probability >= settings.nodule_present_threshold
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.tracking("classification"), identifier="Nodule classification"
        ),
        finding_type=codes.NODULE,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.LUNG)],
        algorithm_id=algorithm,
        measurements=[
            hd.sr.Measurement(
                name=codes.PROBABILITY,
                value=round(findings.nodule_probability, 4),
                unit=codes.NO_UNITS,
                algorithm_id=algorithm,
            )
        ],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=codes.NODULE, value=codes.PRESENT if present else codes.ABSENT
            )
        ],
    )


def build_measurement_report(
    source: SourceSeries,
    findings: Findings,
    seg: tuple[hd.seg.Segmentation, list[str]] | None,
    uids: ResultUIDs,
    settings: ResultsSettings,
) -> hd.sr.Comprehensive3DSR:
    groups: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    evidence: list[Dataset] = list(source.datasets)
    if seg is not None:
        seg_dataset, structures = seg
        evidence.append(seg_dataset)
        for nodule in findings.nodules:
            number = structures.index(f"nodule-{nodule.index}") + 1
            groups.append(_nodule_group(nodule, number, seg_dataset, source, findings, uids))
    groups.append(_classification_group(findings, uids, settings))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(uids, settings),
        procedure_reported=codes.CT_CHEST,
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
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
        series_description="AI lung nodule report",
        contributing_equipment=contributing_equipment(settings, findings),
    )
