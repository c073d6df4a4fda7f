"""A preview picture of a job, drawn server-side with numpy and Pillow from what its pipeline
declares: for a volume pipeline, key slices of the source series with the segmentation
overlaid in the declared colours; for an image pipeline (a radiograph), the source image with
a circle per localised finding."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from pydicom.dataset import Dataset
from sqlalchemy import Engine, select

from gateway.models import Instance
from gateway.pipelines.description import PipelineDescription
from gateway.pipelines.findings import PointFinding
from gateway.settings import GatewaySettings

PANEL = 256
# Findings files written before pipelines were named in them are the lung nodule pipeline's.
DEFAULT_PIPELINE = "lung_nodules"
# Localised findings when the description declares no colour for them: the red of findings.
DEFAULT_LOCALISATION_COLOUR = (255, 48, 48)
# A radiograph without a VOI window of its own: these percentiles of its pixels become black
# and white, as the chest_xray_nodule model card's preprocessing scales them.
RADIOGRAPH_PERCENTILES = (1.0, 99.0)
MIN_CIRCLE_RADIUS = 3.0
"""Preview pixels: a circle stays visible however large the image."""


class NoPreview(Exception):
    """No findings or source images for this job; the message says which."""


@dataclass(frozen=True)
class Overlay:
    label: int
    rgb: NDArray[np.float32]
    alpha: float
    finding: bool
    """Components are findings (key slices show them first); else an area (e.g. an organ)."""


def overlays(description: PipelineDescription) -> list[Overlay]:
    return [
        Overlay(
            s.label,
            np.array(s.colour, dtype=np.float32),
            0.65 if s.components else 0.4,
            s.components,
        )
        for s in description.segments
    ]


def display_window(description: PipelineDescription) -> tuple[float, float]:
    """The window of the model that makes the label map (else the first model)."""
    key = description.segmentation.model if description.segmentation else description.models[0].key
    return description.model(key).preprocess.window


def findings_path(settings: GatewaySettings, job_id: int) -> Path:
    return settings.jobs_dir / str(job_id) / "findings.npz"


def key_slices(
    labels: NDArray[np.uint8],
    findings: Sequence[int] = (2,),
    areas: Sequence[int] = (1,),
    most: int = 3,
) -> list[int]:
    """The slices with the most finding voxels (up to `most`, distinct), else the slice with
    the most area voxels, else the middle one."""
    flat = labels.reshape(labels.shape[0], -1)
    finding = np.isin(flat, list(findings)).sum(axis=1)
    area = np.isin(flat, list(areas)).sum(axis=1)
    if finding.any():
        order = [int(k) for k in np.argsort(-finding, kind="stable") if finding[k] > 0]
        chosen: list[int] = []
        for k in order:
            if all(abs(k - c) > 2 for c in chosen):
                chosen.append(k)
            if len(chosen) == most:
                break
        area_slice = int(np.argmax(area))
        if len(chosen) < most and all(abs(area_slice - c) > 2 for c in chosen):
            chosen.append(area_slice)
        return sorted(chosen)
    return [int(np.argmax(area))] if area.any() else [labels.shape[0] // 2]


def _resize_nearest(mask: NDArray[np.uint8], shape: tuple[int, int]) -> NDArray[np.uint8]:
    if mask.shape == shape:
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(int)
    cols = (np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(int)
    return mask[rows][:, cols]


def _panel(
    path: Path,
    labels: NDArray[np.uint8],
    window: tuple[float, float],
    layers: Sequence[Overlay],
) -> Image.Image:
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.astype(np.float32)
    value = pixels * float(ds.get("RescaleSlope", 1) or 1) + float(
        ds.get("RescaleIntercept", 0) or 0
    )
    low, high = window
    grey = np.clip((value - low) / (high - low), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    mask = _resize_nearest(labels, grey.shape)
    for layer in layers:
        where = mask == layer.label
        rgb[where] = (1 - layer.alpha) * rgb[where] + layer.alpha * layer.rgb
    image = Image.fromarray(rgb.astype(np.uint8), "RGB")
    scale = PANEL / max(image.width, image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def localisation_colour(description: PipelineDescription) -> tuple[int, int, int]:
    """The colour declared for the localisation, else the default (pipeline files declare
    colours only for segments today)."""
    colour = getattr(description.localisation, "colour", None)
    if colour is None:
        return DEFAULT_LOCALISATION_COLOUR
    red, green, blue = (int(c) for c in colour)
    return red, green, blue


def _voi_window(ds: Dataset) -> tuple[float, float, str] | None:
    """The image's first VOI window (centre, width, VOI LUT Function), if it has one."""
    if "WindowCenter" not in ds or "WindowWidth" not in ds:
        return None
    centre, width = ds.WindowCenter, ds.WindowWidth
    centre = centre[0] if isinstance(centre, Sequence) else centre
    width = width[0] if isinstance(width, Sequence) else width
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
    if float(width) <= 0 or (function == "LINEAR" and float(width) < 1):
        return None
    return float(centre), float(width), function


def radiograph_grey(ds: Dataset) -> NDArray[np.float32]:
    """Display values in [0, 1] of a projection image: the Modality LUT, then the image's own
    VOI window (PS3.3 C.11.2.1.2) or, without one, its 1st and 99th percentiles; MONOCHROME1
    inverted, so that bone is bright whichever way the modality stored it."""
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise NoPreview(f"expected MONOCHROME1 or MONOCHROME2, found {photometric!r}")
    pixels = np.asarray(ds.pixel_array)
    if pixels.ndim != 2:
        raise NoPreview(f"expected one single-frame image, found pixel data {pixels.shape}")
    value = pixels.astype(np.float32) * float(ds.get("RescaleSlope", 1) or 1) + float(
        ds.get("RescaleIntercept", 0) or 0
    )
    window = _voi_window(ds)
    if window is None:
        low, high = np.percentile(value, RADIOGRAPH_PERCENTILES)
        grey = (value - low) / max(float(high - low), 1e-6)
    else:
        centre, width, function = window
        if function == "SIGMOID":
            grey = 1.0 / (1.0 + np.exp(-4.0 * (value - centre) / width))
        elif function == "LINEAR_EXACT":
            grey = (value - centre) / width + 0.5
        else:
            grey = (value - (centre - 0.5)) / (width - 1.0) + 0.5
    grey = np.clip(grey, 0.0, 1.0).astype(np.float32)
    return 1.0 - grey if photometric == "MONOCHROME1" else grey


def radiograph_panel(
    path: Path, points: Sequence[PointFinding], colour: tuple[int, int, int]
) -> Image.Image:
    """The radiograph at preview size with a circle per point (centre and radius scaled from
    source pixels, where 0 is the centre of the first pixel)."""
    grey = radiograph_grey(pydicom.dcmread(path))
    image = Image.fromarray(np.rint(grey * 255.0).astype(np.uint8), "L")
    scale = PANEL / max(image.width, image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    column_scale, row_scale = size[0] / image.width, size[1] / image.height
    panel = image.resize(size, Image.Resampling.BILINEAR).convert("RGB")
    draw = ImageDraw.Draw(panel)
    for point in points:
        x = (point.column + 0.5) * column_scale - 0.5
        y = (point.row + 0.5) * row_scale - 0.5
        radius = max(point.radius_px * min(column_scale, row_scale), MIN_CIRCLE_RADIUS)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=colour, width=2)
    return panel


def _stored_files(engine: Engine, sop_uids: Sequence[str]) -> dict[str, str]:
    with engine.connect() as connection:
        return dict(
            connection.execute(
                select(Instance.sop_instance_uid, Instance.file_path).where(
                    Instance.sop_instance_uid.in_(sop_uids)
                )
            )
            .tuples()
            .all()
        )


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _radiograph_preview(
    settings: GatewaySettings,
    engine: Engine,
    job_id: int,
    sop_uids: Sequence[str],
    points: Sequence[PointFinding],
    colour: tuple[int, int, int],
) -> bytes:
    if len(sop_uids) != 1:
        raise NoPreview(f"expected one source image of job {job_id}, found {len(sop_uids)}")
    relative = _stored_files(engine, sop_uids).get(sop_uids[0])
    if relative is None or not (settings.spool_dir / relative).is_file():
        raise NoPreview(f"expected the source image of job {job_id}, found none stored")
    on_image = [p for p in points if p.sop_instance_uid == sop_uids[0]]
    return _png(radiograph_panel(settings.spool_dir / relative, on_image, colour))


def render_preview(settings: GatewaySettings, engine: Engine, job_id: int) -> bytes:
    """PNG bytes; raises NoPreview when the job has no findings or source files."""
    path = findings_path(settings, job_id)
    if not path.is_file():
        raise NoPreview(f"expected findings of job {job_id}, found none")
    with np.load(path, allow_pickle=False) as data:
        labels = np.asarray(data["labels"], dtype=np.uint8)
        meta = json.loads(str(data["meta"]))
    sop_uids: list[str] = meta["sop_instance_uids"]
    name = str(meta.get("pipeline", DEFAULT_PIPELINE))
    try:
        description = settings.pipeline_registry().get(name).description
    except KeyError as exc:
        raise NoPreview(f"job {job_id}: {exc.args[0]}") from exc
    if description.accepts.geometry == "image":
        points = [PointFinding(**f) for f in meta.get("point_findings", [])]
        colour = localisation_colour(description)
        return _radiograph_preview(settings, engine, job_id, sop_uids, points, colour)
    layers = overlays(description)
    if labels.ndim != 3 or labels.shape[0] != len(sop_uids):
        raise NoPreview(
            f"expected one label slice per source image, found {labels.shape} for "
            f"{len(sop_uids)} images"
        )
    slices = key_slices(
        labels,
        [layer.label for layer in layers if layer.finding],
        [layer.label for layer in layers if not layer.finding],
    )
    wanted = [sop_uids[k] for k in slices]
    files = _stored_files(engine, wanted)
    panels = []
    for k, uid in zip(slices, wanted, strict=True):
        relative = files.get(uid)
        if relative is None or not (settings.spool_dir / relative).is_file():
            continue
        panels.append(
            _panel(settings.spool_dir / relative, labels[k], display_window(description), layers)
        )
    if not panels:
        raise NoPreview(f"expected the source images of job {job_id}, found none stored")
    width = sum(p.width for p in panels) + 4 * (len(panels) - 1)
    height = max(p.height for p in panels)
    sheet = Image.new("RGB", (width, height), (0, 0, 0))
    x = 0
    for panel in panels:
        sheet.paste(panel, (x, 0))
        x += panel.width + 4
    return _png(sheet)
