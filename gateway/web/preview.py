"""A preview picture of a job: key slices of its source series with the segmentation
overlaid in the colours its pipeline declares, drawn server-side with numpy and Pillow."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from sqlalchemy import Engine, select

from gateway.models import Instance
from gateway.pipelines.description import PipelineDescription
from gateway.settings import GatewaySettings

PANEL = 256
# Findings files written before pipelines were named in them are the lung nodule pipeline's.
DEFAULT_PIPELINE = "lung_nodules"


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
    with engine.connect() as connection:
        files = dict(
            connection.execute(
                select(Instance.sop_instance_uid, Instance.file_path).where(
                    Instance.sop_instance_uid.in_(wanted)
                )
            )
            .tuples()
            .all()
        )
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
    out = io.BytesIO()
    sheet.save(out, format="PNG")
    return out.getvalue()
