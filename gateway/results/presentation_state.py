"""Findings as a Grayscale Softcopy Presentation State over the source images (highdicom):
what most PACS viewers display when they show neither SEG nor TID 1500.

On every slice a reported finding covers, its outline (closed POLYLINE, PIXEL units); on its
key slice the measured long and short axis (POLYLINEs of two points) and a text with its
values, anchored at the finding. Localised findings on a radiograph: a CIRCLE and a text.
One graphic layer per kind of finding in its declared colour, one graphic group per finding;
every graphic carries the finding's tracking ID and UID (those of its SEG segment and SR
group). The source's window is kept; a CT without one gets the lung window.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from gateway.results.config import ResultsSettings
from gateway.results.declared import DeclaredFindings
from gateway.results.display import default_window, source_window
from gateway.results.identity import ResultUIDs, contributing_equipment, software_versions
from gateway.results.source import SourceSeries
from gateway.results.viewer_findings import (
    SliceGraphics,
    ViewerFinding,
    copy_anatomy,
    viewer_findings,
)

# A text line's box: this fraction of the image height, at least this many pixels.
_TEXT_BOX_FRACTION = 0.06
_TEXT_BOX_MIN_PX = 6.0
_MARGIN_FRACTION = 0.02


def layer_name(kind: str) -> str:
    """Graphic layer (CS, 16 characters) of a kind of finding ('nodule' -> 'NODULE')."""
    return kind.upper()[:16]


def _circle_point(column: float, row: float, radius: float, image: Dataset) -> NDArray[np.float64]:
    """The circle's centre and a point on it that lies within the image (GSPS coordinates
    must)."""
    columns, rows = float(image.Columns), float(image.Rows)
    for dc, dr in ((radius, 0.0), (-radius, 0.0), (0.0, radius), (0.0, -radius)):
        if 0.0 <= column + dc <= columns and 0.0 <= row + dr <= rows:
            return np.array([[column, row], [column + dc, row + dr]])
    raise ValueError(
        f"expected a circle of radius {radius:.1f} px around ({column:.1f}, {row:.1f}) to "
        f"fit a {image.Columns}x{image.Rows} image, found it larger"
    )


def _graphics(
    graphics: SliceGraphics,
    finding: ViewerFinding,
    image: Dataset,
    tracking_uid: str,
    group: hd.pr.GraphicGroup,
) -> list[hd.pr.GraphicObject]:
    def graphic(kind: hd.pr.GraphicTypeValues, data: NDArray[np.float64]) -> hd.pr.GraphicObject:
        return hd.pr.GraphicObject(
            graphic_type=kind,
            graphic_data=data,
            units=hd.pr.AnnotationUnitsValues.PIXEL,
            tracking_id=finding.title,
            tracking_uid=tracking_uid,
            graphic_group=group,
        )

    objects = [graphic(hd.pr.GraphicTypeValues.POLYLINE, o) for o in graphics.outlines]
    objects.extend(graphic(hd.pr.GraphicTypeValues.POLYLINE, line) for line in graphics.lines)
    objects.extend(
        graphic(hd.pr.GraphicTypeValues.CIRCLE, _circle_point(c, r, radius, image))
        for c, r, radius in graphics.circles
    )
    return objects


def _text(
    finding: ViewerFinding,
    line: int,
    image: Dataset,
    tracking_uid: str,
    group: hd.pr.GraphicGroup,
) -> hd.pr.TextObject:
    """The finding's label in a box across the image, above the finding if it lies in the
    lower half, else below; `line`: its place among the texts of that slice. The anchor
    point, on the finding's edge facing the box, ties the text to it."""
    columns, rows = float(image.Columns), float(image.Rows)
    points = finding.on_key_slice.points()
    height = max(_TEXT_BOX_FRACTION * rows, _TEXT_BOX_MIN_PX)
    margin = _MARGIN_FRACTION * min(rows, columns)
    above = float(np.mean(points[:, 1])) > rows / 2.0
    if above:
        top = margin + line * height
        anchor = points[int(np.argmin(points[:, 1]))]
    else:
        top = rows - margin - (line + 1) * height
        anchor = points[int(np.argmax(points[:, 1]))]
    top = min(max(top, 0.0), rows - height)
    return hd.pr.TextObject(
        text_value=finding.label,
        units=hd.pr.AnnotationUnitsValues.PIXEL,
        bounding_box=(margin, top, columns - margin, top + height),
        anchor_point=(
            float(np.clip(anchor[0], 0.0, columns)),
            float(np.clip(anchor[1], 0.0, rows)),
        ),
        text_justification=hd.pr.TextJustificationValues.LEFT,
        anchor_point_visible=True,
        tracking_id=finding.title,
        tracking_uid=tracking_uid,
        graphic_group=group,
    )


def _layers(findings: list[ViewerFinding]) -> dict[str, hd.pr.GraphicLayer]:
    layers: dict[str, hd.pr.GraphicLayer] = {}
    for finding in findings:
        if finding.kind in layers:
            continue
        name = layer_name(finding.kind)
        if any(layer.GraphicLayer == name for layer in layers.values()):
            raise ValueError(
                f"expected distinct graphic layer names, found {name!r} twice (kinds "
                f"longer than 16 characters?)"
            )
        layers[finding.kind] = hd.pr.GraphicLayer(
            layer_name=name,
            order=len(layers) + 1,
            description=f"{finding.kind_title} (AI)"[:64],
            display_color=hd.color.CIELabColor.from_rgb(*finding.colour),
        )
    return layers


def _annotations(
    findings: list[ViewerFinding],
    source: SourceSeries,
    uids: ResultUIDs,
    layers: dict[str, hd.pr.GraphicLayer],
    groups: list[hd.pr.GraphicGroup],
) -> list[hd.pr.GraphicAnnotation]:
    annotations = []
    texts_on: dict[int, int] = {}
    for finding, group in zip(findings, groups, strict=True):
        tracking_uid = uids.tracking(finding.key)
        for graphics in finding.slices:
            image = source.datasets[graphics.slice_index]
            texts = []
            if graphics.slice_index == finding.key_slice:
                line = texts_on.get(graphics.slice_index, 0)
                texts_on[graphics.slice_index] = line + 1
                texts.append(_text(finding, line, image, tracking_uid, group))
            objects = _graphics(graphics, finding, image, tracking_uid, group)
            annotations.append(
                hd.pr.GraphicAnnotation(
                    referenced_images=[image],
                    graphic_layer=layers[finding.kind],
                    graphic_objects=objects or None,
                    text_objects=texts or None,
                )
            )
    return annotations


def _voi(source: SourceSeries) -> list[hd.pr.SoftcopyVOILUTTransformation] | None:
    """None: highdicom copies the images' own windows (or VOI LUTs). Images without any get
    the modality's default window, if it has one."""
    if any(source_window(ds) or "VOILUTSequence" in ds for ds in source.datasets):
        return None
    window = default_window(source.first)
    if window is None:
        return None
    return [
        hd.pr.SoftcopyVOILUTTransformation(
            window_center=window.center,
            window_width=window.width,
            window_explanation=window.explanation,
        )
    ]


def build_presentation_state(
    source: SourceSeries,
    item: DeclaredFindings,
    uids: ResultUIDs,
    settings: ResultsSettings,
    drawn: Sequence[ViewerFinding] | None = None,
) -> Dataset | None:
    """The GSPS of the reported findings over every source image, or None when no finding
    is reported (nothing to draw). `drawn`: `viewer_findings(source, item, settings)` when
    the caller builds several forms (it labels the findings' components once for all)."""
    findings = list(drawn) if drawn is not None else viewer_findings(source, item, settings)
    if not findings:
        return None
    layers = _layers(findings)
    groups = [
        hd.pr.GraphicGroup(graphic_group_id=n, label=finding.title, description=finding.label)
        for n, finding in enumerate(findings, start=1)
    ]
    monochrome1 = str(source.first.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=list(source.datasets),
        series_instance_uid=uids.gsps_series,
        series_number=settings.gsps_series_number,
        sop_instance_uid=uids.gsps_instance,
        instance_number=1,
        manufacturer=settings.manufacturer,
        manufacturer_model_name=settings.manufacturer_model_name,
        # highdicom types it `str | tuple[str]`, but pydicom warns on a tuple; a list is right
        software_versions=list(software_versions(item.findings)),  # type: ignore[arg-type]
        device_serial_number=settings.device_serial_number,
        content_label=item.description.report.seg_content_label,
        content_description=f"AI: {item.description.title}"[:64],
        graphic_annotations=_annotations(findings, source, uids, layers, groups),
        graphic_layers=list(layers.values()),
        graphic_groups=groups,
        institution_name=settings.institution_name,
        voi_lut_transformations=_voi(source),
        # A presentation state's output is P-values: MONOCHROME1 (radiographs) is shown as
        # its modality meant it only inverted.
        presentation_lut_transformation=hd.PresentationLUTTransformation(
            presentation_lut_shape=hd.PresentationLUTShapeValues.INVERSE
        )
        if monochrome1
        else None,
        contributing_equipment=contributing_equipment(settings, item),
        series_description=settings.gsps_series_description,
    )
    copy_anatomy(source.first, gsps)
    return gsps
