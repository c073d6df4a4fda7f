"""A preview picture of a job: key slices of its source series with the segmentation
overlaid (lung green, nodules red), drawn server-side with numpy and Pillow."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from sqlalchemy import Engine, select

from gateway.models import Instance
from gateway.settings import GatewaySettings

PANEL = 256
WINDOW_CENTER, WINDOW_WIDTH = -600.0, 1500.0  # lung window
LUNG_RGB = np.array([40, 200, 80], dtype=np.float32)
NODULE_RGB = np.array([235, 40, 40], dtype=np.float32)


class NoPreview(Exception):
    """No findings or source images for this job; the message says which."""


def findings_path(settings: GatewaySettings, job_id: int) -> Path:
    return settings.jobs_dir / str(job_id) / "findings.npz"


def key_slices(labels: NDArray[np.uint8], most: int = 3) -> list[int]:
    """The slices with the most nodule voxels (up to `most`, distinct), else the slice with
    the most lung, else the middle one."""
    nodule = (labels >= 2).reshape(labels.shape[0], -1).sum(axis=1)
    if nodule.any():
        order = [int(k) for k in np.argsort(-nodule, kind="stable") if nodule[k] > 0]
        chosen: list[int] = []
        for k in order:
            if all(abs(k - c) > 2 for c in chosen):
                chosen.append(k)
            if len(chosen) == most:
                break
        lung_slice = int(np.argmax((labels == 1).reshape(labels.shape[0], -1).sum(axis=1)))
        if len(chosen) < most and all(abs(lung_slice - c) > 2 for c in chosen):
            chosen.append(lung_slice)
        return sorted(chosen)
    lung = (labels == 1).reshape(labels.shape[0], -1).sum(axis=1)
    return [int(np.argmax(lung))] if lung.any() else [labels.shape[0] // 2]


def _resize_nearest(mask: NDArray[np.uint8], shape: tuple[int, int]) -> NDArray[np.uint8]:
    if mask.shape == shape:
        return mask
    rows = (np.arange(shape[0]) * mask.shape[0] / shape[0]).astype(int)
    cols = (np.arange(shape[1]) * mask.shape[1] / shape[1]).astype(int)
    return mask[rows][:, cols]


def _panel(path: Path, labels: NDArray[np.uint8]) -> Image.Image:
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.astype(np.float32)
    hu = pixels * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    low = WINDOW_CENTER - WINDOW_WIDTH / 2
    grey = np.clip((hu - low) / WINDOW_WIDTH, 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=2)
    mask = _resize_nearest(labels, grey.shape)
    lung = mask == 1
    nodule = mask >= 2
    rgb[lung] = 0.6 * rgb[lung] + 0.4 * LUNG_RGB
    rgb[nodule] = 0.35 * rgb[nodule] + 0.65 * NODULE_RGB
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
        sop_uids: list[str] = json.loads(str(data["meta"]))["sop_instance_uids"]
    if labels.ndim != 3 or labels.shape[0] != len(sop_uids):
        raise NoPreview(
            f"expected one label slice per source image, found {labels.shape} for "
            f"{len(sop_uids)} images"
        )
    slices = key_slices(labels)
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
        panels.append(_panel(settings.spool_dir / relative, labels[k]))
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
