"""Findings to a Comprehensive 3D SR with a TID 1500 Measurement Report (highdicom): one
volumetric group per reported segment finding, one group per image-level finding, one planar
group per localised finding on a projection image, as the pipeline declares them."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from gateway.pipelines.description import PipelineDescription
from gateway.pipelines.findings import (
    ImageFinding,
    PipelineFindings,
    PointFinding,
    SegmentFinding,
)
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


def _axes_group(
    segment: SegmentFinding,
    source: SourceSeries,
    item: DeclaredFindings,
    uids: ResultUIDs,
) -> hd.sr.MeasurementsAndQualitativeEvaluations | None:
    """Where the axes lie: TID 1411 allows no coordinates on the measurements of the
    volumetric group, so a TID 1501 group of the same finding (same tracking UID) holds the
    long and short axis, each inferred from its end points (SCOORD3D POLYLINE, TID 320) on
    the axial slice it was measured on, and the finding's centre (SCOORD3D POINT, Center)."""
    declared_segment = item.description.segment(segment.label)
    axes = segment.axial_axes
    names = [n for n in ("long_axis", "short_axis") if n in declared_segment.measurements]
    if axes is None or not names:
        return None
    assert item.description.segmentation is not None
    algorithm = sr_algorithm(model_of(item, item.description.segmentation.model))
    frame = item.findings.frame_of_reference_uid
    images = None
    if axes.sop_instance_uid:
        images = [
            hd.sr.SourceImageForMeasurement(str(source.first.SOPClassUID), axes.sop_instance_uid)
        ]
    measurements = []
    for name in names:
        points = axes.long_axis_points if name == "long_axis" else axes.short_axis_points
        coordinates = [
            hd.sr.CoordinatesForMeasurement3D(
                graphic_type=hd.sr.GraphicTypeValues3D.POLYLINE,
                graphic_data=np.array(points, dtype=np.float64),
                frame_of_reference_uid=frame,
            )
        ]
        if name == names[0]:
            coordinates.append(
                hd.sr.CoordinatesForMeasurement3D(
                    graphic_type=hd.sr.GraphicTypeValues3D.POINT,
                    graphic_data=np.array([segment.centroid_patient_mm], dtype=np.float64),
                    frame_of_reference_uid=frame,
                    purpose=codes.CENTER,
                )
            )
        concept = codes.MEASUREMENTS[name]
        measurements.append(
            hd.sr.Measurement(
                name=concept.name,
                value=round(axes.value(name), 1),
                unit=concept.unit,
                algorithm_id=algorithm,
                referenced_images=images,
                referenced_coordinates=coordinates,
            )
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.tracking(segment.key), identifier=segment_title(item.description, segment)
        ),
        finding_type=code(declared_segment.type),
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
        measurements=[_probability(finding.probability, algorithm)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(
                name=finding_code, value=codes.PRESENT if finding.present else codes.ABSENT
            )
        ],
    )


def _probability(value: float, algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.Measurement:
    """A model's probability as a unitless measurement (rounded: derived UIDs, stable text)."""
    return hd.sr.Measurement(
        name=codes.PROBABILITY, value=round(value, 4), unit=codes.NO_UNITS, algorithm_id=algorithm
    )


def _point_group(
    point: PointFinding, source: SourceSeries, item: DeclaredFindings, uids: ResultUIDs
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """A localised finding on a projection image (TID 1410): a circle of the declared nominal
    radius around its point (SCOORD CIRCLE on the image, pixel coordinates), its probability,
    and its finding code, so viewers draw it on the radiograph."""
    localisation = item.description.localisation
    assert localisation is not None and localisation.name == point.name
    by_uid = {str(ds.SOPInstanceUID): ds for ds in source.datasets}
    image = by_uid.get(point.sop_instance_uid)
    if image is None:
        raise ValueError(
            f"finding {point.key}: expected its image {point.sop_instance_uid} among the "
            f"source images, found {sorted(by_uid)}"
        )
    algorithm = sr_algorithm(model_of(item, localisation.model))
    # SCOORD pixel coordinates are (column, row) with 0.0 at the top left corner of the top
    # left pixel; the finding's row and column count from that pixel's centre.
    x, y = point.column + 0.5, point.row + 0.5
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.CIRCLE,
        graphic_data=np.array([[x, y], [x + point.radius_px, y]], dtype=np.float64),
        source_image=hd.sr.SourceImageForRegion(str(image.SOPClassUID), point.sop_instance_uid),
    )
    site = localisation.finding_site
    finding_code = code(localisation.finding)
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.tracking(point.key), identifier=f"{localisation.title} {point.index}"
        ),
        referenced_region=region,
        finding_type=finding_code,
        finding_sites=None if site is None else [hd.sr.FindingSite(anatomic_location=code(site))],
        algorithm_id=algorithm,
        measurements=[_probability(point.probability, algorithm)],
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(name=finding_code, value=codes.PRESENT)
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
        | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
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
                axes = _axes_group(segment, source, item, uids)
                if axes is not None:
                    groups.append(axes)
    groups.extend(_image_group(f, item, uids) for f in item.findings.image_findings)
    groups.extend(_point_group(p, source, item, uids) for p in item.findings.point_findings)
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
