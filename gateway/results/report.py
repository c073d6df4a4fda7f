"""Findings to a Comprehensive 3D SR with a TID 1500 Measurement Report (highdicom), as the
pipeline declares them, laid out so that OHIF draws and lists it (OHIF 3.13 merges the groups
of one tracking UID into one measurement; docs/results.md) and PixelMed's TID 1500 checker
accepts it:

- per reported segment finding, a TID 1501 group with the measurements of its key slice
  (long and short axis, their mean), each inferred from its lines on that slice (SCOORD
  POLYLINE, image coordinates), written as OHIF writes its own Bidirectional measurement;
  then a TID 1411 group of the same tracking UID referencing its SEG segment with the
  measurements of the whole finding (volume, 3D diameter);
- per localised finding on a projection image, a TID 1410 group with a circle around it;
- per image-level finding (a classification of the whole series, no place on any image),
  its presence and the model's probability as report-level qualitative evaluations (TID 1500
  rows 12-14): OHIF 3.13 stops loading the whole SR at a measurement group without
  coordinates."""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from gateway.pipelines.description import PipelineDescription
from gateway.pipelines.findings import (
    AxialAxes,
    PipelineFindings,
    PointFinding,
    SegmentFinding,
)
from gateway.pipelines.measure import AXIAL, segment_mask
from gateway.results import codes
from gateway.results.config import ResultsSettings
from gateway.results.declared import ConvertibleFindings, DeclaredFindings, code, declared
from gateway.results.identity import (
    ResultUIDs,
    contributing_equipment,
    model_of,
    sr_algorithm,
)
from gateway.results.image_plane import image_coordinates
from gateway.results.outline import mask_outlines
from gateway.results.segmentation import segment_title
from gateway.results.source import SourceSeries

Group = (
    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


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


def _measurement(
    name: str,
    value: float,
    lines: list[hd.sr.CoordinatesForMeasurement] | None = None,
) -> hd.sr.Measurement:
    """A declared measurement. No algorithm item under it: OHIF labels a NUM only if it has
    no content items or a SCOORD among them; the algorithm is named at group level."""
    concept = codes.MEASUREMENTS[name]
    return hd.sr.Measurement(
        name=concept.name,
        value=round(value, 1),
        unit=concept.unit,
        derivation=concept.derivation,
        referenced_coordinates=lines,
    )


def _key_slice(segment: SegmentFinding, source: SourceSeries) -> tuple[AxialAxes, Dataset] | None:
    """The finding's axes and the source image they were measured on, if both are known."""
    axes = segment.axial_axes
    if axes is None or not axes.sop_instance_uid:
        return None
    for image in source.datasets:
        if str(image.SOPInstanceUID) == axes.sop_instance_uid:
            return axes, image
    raise ValueError(
        f"finding {segment.key}: expected its key slice {axes.sop_instance_uid} among the "
        f"{len(source.datasets)} source images, found it missing"
    )


def _volumetric_group(
    segment: SegmentFinding,
    segment_number: int,
    seg: hd.seg.Segmentation,
    source: SourceSeries,
    item: DeclaredFindings,
    uids: ResultUIDs,
    placed: frozenset[str],
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    """TID 1411: the finding as its SEG segment (same tracking UID) with the declared
    measurements not placed on the key slice. TID 1411 has no algorithm row of its own (only
    under each NUM, which OHIF would not label): the TID 1501 group of the same finding and
    the segment name the algorithm."""
    declared_segment = item.description.segment(segment.label)
    region = declared_segment.anatomic_region
    measurements = []
    for name in declared_segment.measurements:
        measured = segment.measurement(name)
        if name not in placed and measured is not None:
            measurements.append(_measurement(name, measured.value))
    source_series = hd.sr.SourceSeriesForSegmentation(str(source.first.SeriesInstanceUID))
    # highdicom writes the meaning title-cased; PS3.16 (and pydicom) spell it lower case.
    source_series.ConceptNameCodeSequence[0].CodeMeaning = codes.SOURCE_SERIES_FOR_SEGMENTATION
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.tracking(segment.key), identifier=segment_title(item.description, segment)
        ),
        referenced_segment=hd.sr.ReferencedSegment(
            sop_class_uid=seg.SOPClassUID,
            sop_instance_uid=seg.SOPInstanceUID,
            segment_number=segment_number,
            source_series=source_series,
        ),
        finding_type=code(declared_segment.type),
        finding_sites=None
        if region is None
        else [hd.sr.FindingSite(anatomic_location=code(region))],
        measurements=measurements,
    )


def _line(
    image: Dataset, points_mm: tuple[tuple[float, float, float], ...]
) -> hd.sr.CoordinatesForMeasurement:
    """Two end points (LPS, mm) as a SCOORD POLYLINE in the image's pixels, SELECTED FROM it:
    the line a radiologist draws on the slice."""
    return hd.sr.CoordinatesForMeasurement(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=image_coordinates(image, np.asarray(points_mm, dtype=np.float64)),
        source_image=hd.sr.SourceImageForRegion(str(image.SOPClassUID), str(image.SOPInstanceUID)),
    )


def _key_slice_group(
    segment: SegmentFinding,
    key_slice: tuple[AxialAxes, Dataset],
    names: Sequence[str],
    item: DeclaredFindings,
    uids: ResultUIDs,
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501, same tracking UID as the finding's TID 1411 group: long and short axis, each
    inferred from its line on the key slice, and their mean from both lines. The long axis
    comes first: OHIF places the merged measurement on the image of the first line and reads
    the first NUM as the long axis."""
    axes, image = key_slice
    declared_segment = item.description.segment(segment.label)
    assert item.description.segmentation is not None  # segments imply a segmentation
    algorithm = sr_algorithm(model_of(item, item.description.segmentation.model))
    points = {"long_axis": [axes.long_axis_points], "short_axis": [axes.short_axis_points]}
    both = [axes.long_axis_points, axes.short_axis_points]  # the mean's: long axis first
    region = declared_segment.anatomic_region
    title = segment_title(item.description, segment)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        # OHIF lists the measurement (its Bidirectional tool) by this identifier's prefix.
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.tracking(segment.key), identifier=f"{codes.CORNERSTONE_BIDIRECTIONAL}:{title}"
        ),
        finding_type=code(declared_segment.type),
        finding_sites=None
        if region is None
        else [hd.sr.FindingSite(anatomic_location=code(region))],
        algorithm_id=algorithm,
        measurements=[
            _measurement(name, axes.value(name), [_line(image, p) for p in points.get(name, both)])
            for name in sorted(names, key=["long_axis", "short_axis", "mean_diameter"].index)
        ],
    )


def _segment_groups(
    segment: SegmentFinding,
    segment_number: int,
    seg: hd.seg.Segmentation,
    source: SourceSeries,
    item: DeclaredFindings,
    uids: ResultUIDs,
) -> list[Group]:
    declared_names = item.description.segment(segment.label).measurements
    key_slice = _key_slice(segment, source)
    placed = [n for n in declared_names if n in AXIAL] if key_slice is not None else []
    groups: list[Group] = []
    if key_slice is not None and placed:
        # First: OHIF takes the merged measurement's tracking identifier from the first group.
        groups.append(_key_slice_group(segment, key_slice, placed, item, uids))
    else:
        # Nothing measured on a slice: without a region of its own OHIF 3.13 stops loading
        # the whole SR at this finding, so its outline on its largest slice goes first.
        outline = _outline_group(segment, source, item, uids)
        if outline is not None:
            groups.append(outline)
    groups.append(
        _volumetric_group(segment, segment_number, seg, source, item, uids, frozenset(placed))
    )
    return groups


def _outline_group(
    segment: SegmentFinding, source: SourceSeries, item: DeclaredFindings, uids: ResultUIDs
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | None:
    """TID 1410, same tracking UID as the finding's TID 1411 group: the finding's outer
    outline on the slice where it is largest (closed SCOORD POLYLINE SELECTED FROM that
    slice); None for a finding without voxels."""
    mask = segment_mask(item.findings.labels, segment)
    areas = mask.sum(axis=(1, 2))
    if not areas.any():
        return None
    index = int(np.argmax(areas))
    image = source.datasets[index]
    declared_segment = item.description.segment(segment.label)
    region = declared_segment.anatomic_region
    assert item.description.segmentation is not None  # segments imply a segmentation
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.tracking(segment.key), identifier=segment_title(item.description, segment)
        ),
        referenced_region=hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=mask_outlines(mask[index])[0],  # largest first
            source_image=hd.sr.SourceImageForRegion(
                str(image.SOPClassUID), str(image.SOPInstanceUID)
            ),
        ),
        finding_type=code(declared_segment.type),
        finding_sites=None
        if region is None
        else [hd.sr.FindingSite(anatomic_location=code(region))],
        algorithm_id=sr_algorithm(model_of(item, item.description.segmentation.model)),
    )


def _probability(
    value: float, algorithm: hd.sr.AlgorithmIdentification | None = None
) -> hd.sr.Measurement:
    """A model's probability as a unitless measurement (rounded: derived UIDs, stable text)."""
    return hd.sr.Measurement(
        name=codes.PROBABILITY, value=round(value, 4), unit=codes.NO_UNITS, algorithm_id=algorithm
    )


def _qualitative_evaluations(item: DeclaredFindings) -> hd.sr.ContainerContentItem | None:
    """TID 1500 rows 12-14: each image-level finding as Present or Absent (the pipeline's
    threshold on the model's probability) and that probability, about the images as a whole,
    outside any measurement group. Rows 12-14 hold CODE and TEXT items only: the probability
    is a TEXT named DCM Probability, its value the number (4 decimals at most)."""
    declared_finding = item.description.classification
    findings = item.findings.image_findings
    if declared_finding is None or not findings:
        return None
    container = hd.sr.ContainerContentItem(
        name=codes.QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    contains = hd.sr.RelationshipTypeValues.CONTAINS
    items: list[hd.sr.CodeContentItem | hd.sr.TextContentItem] = []
    for finding in findings:
        items.append(
            hd.sr.CodeContentItem(
                name=code(declared_finding.finding),
                value=codes.PRESENT if finding.present else codes.ABSENT,
                relationship_type=contains,
            )
        )
        items.append(
            hd.sr.TextContentItem(
                name=codes.PROBABILITY,
                value=str(round(finding.probability, 4)),
                relationship_type=contains,
            )
        )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _point_group(
    point: PointFinding, source: SourceSeries, item: DeclaredFindings, uids: ResultUIDs
) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
    """A localised finding on a projection image (TID 1410): a circle of the declared nominal
    radius around its point (SCOORD CIRCLE on the image, pixel coordinates) and its
    probability, so viewers draw it on the radiograph. TID 1410 names the algorithm under
    the NUM only (TID 1419); OHIF labels every NUM of a group with a region."""
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
    return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uids.tracking(point.key), identifier=f"{localisation.title} {point.index}"
        ),
        referenced_region=region,
        finding_type=code(localisation.finding),
        finding_sites=None if site is None else [hd.sr.FindingSite(anatomic_location=code(site))],
        measurements=[_probability(point.probability, algorithm)],
    )


_IMAGING = "126010"  # Imaging Measurements


def _placeholder_group(uids: ResultUIDs) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uids.uid("placeholder"), identifier="-")
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
    groups: list[Group] = []
    evidence: list[Dataset] = list(source.datasets)
    if seg is not None:
        seg_dataset, structures = seg
        evidence.append(seg_dataset)
        for segment in item.findings.segments:
            if item.description.segment(segment.label).report and segment.key in structures:
                number = structures.index(segment.key) + 1
                groups.extend(_segment_groups(segment, number, seg_dataset, source, item, uids))
    groups.extend(_point_group(p, source, item, uids) for p in item.findings.point_findings)
    report = item.description.report
    evaluations = _qualitative_evaluations(item)
    content = hd.sr.MeasurementReport(
        observation_context=_observation_context(uids, settings),
        procedure_reported=code(report.procedure),
        # highdicom wants a group; TID 1500 wants Imaging Measurements only without
        # Qualitative Evaluations (row 6): nothing measured leaves it out, see below.
        imaging_measurements=groups or [_placeholder_group(uids)],
    )
    root = content[0].ContentSequence
    for container in (i for i in root if i.ConceptNameCodeSequence[0].CodeValue == _IMAGING):
        if not groups:
            # no placeholder: OHIF 3.13 stops loading an SR at a group without coordinates
            del container.ContentSequence
    if not groups and evaluations is not None:
        root[:] = [i for i in root if i.ConceptNameCodeSequence[0].CodeValue != _IMAGING]
    if evaluations is not None:
        root.append(evaluations)
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
