"""WADO-RS rendered and thumbnail: one frame as image/jpeg or image/png, decoded by pydicom
(only that frame is decoded), modality LUT (rescale) applied, then the window asked for
(`window=center,width[,linear|sigmoid]`), else the instance's first window, else its range.
MONOCHROME1 is inverted; colour goes as RGB; 1-bit frames (SEG) as black and white."""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.pixels import apply_modality_lut, pixel_array

RENDERED_TYPES = ("image/jpeg", "image/png")


class CannotRender(Exception):
    """The instance has no pixel data pydicom decodes, or a parameter is wrong (400/406)."""


@dataclass(frozen=True)
class Window:
    center: float
    width: float
    function: str = "linear"

    @classmethod
    def parse(cls, text: str) -> Window:
        parts = [p.strip() for p in text.split(",")]
        try:
            center, width = float(parts[0]), float(parts[1])
        except (IndexError, ValueError):
            raise CannotRender(
                f"window: expected center,width[,linear|sigmoid], found {text[:40]!r}"
            ) from None
        function = parts[2].lower() if len(parts) > 2 else "linear"
        if function not in ("linear", "sigmoid") or width <= 0:
            raise CannotRender(
                f"window: expected a positive width and linear or sigmoid, found {text[:40]!r}"
            )
        return cls(center, width, function)


def _first(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value[0] if isinstance(value, pydicom.multival.MultiValue) else value)  # type: ignore[arg-type]
    except (TypeError, ValueError, IndexError):
        return None


def _to_grey(values: NDArray[np.float64], window: Window | None) -> NDArray[np.uint8]:
    if window is None:
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low or 1.0)
    elif window.function == "sigmoid":
        scaled = 1.0 / (1.0 + np.exp(-4.0 * (values - window.center) / window.width))
    else:  # PS3.3 C.11.2.1.2.1
        scaled = (values - (window.center - 0.5)) / (window.width - 1) + 0.5
    return np.asarray(np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5, dtype=np.uint8)


def render(
    path: Path,
    frame_number: int,
    media_type: str,
    *,
    window: Window | None = None,
    quality: int = 90,
    viewport: tuple[int, int] | None = None,
) -> bytes:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    if "Rows" not in ds:
        raise CannotRender("expected an instance with pixel data, found none")
    frames = int(ds.get("NumberOfFrames") or 1)
    if not 1 <= frame_number <= frames:
        raise CannotRender(f"expected a frame number from 1 to {frames}, found {frame_number}")
    try:
        array = pixel_array(path, index=frame_number - 1 if frames > 1 else None)
    except Exception as exc:
        raise CannotRender(
            f"expected pixel data pydicom can decode, found {type(exc).__name__} for "
            f"{ds.file_meta.get('TransferSyntaxUID', 'an unknown transfer syntax')}"
        ) from exc
    if int(ds.get("SamplesPerPixel") or 1) == 3:
        image = Image.fromarray(np.asarray(array, dtype=np.uint8), mode="RGB")
    elif int(ds.BitsAllocated) == 1:
        image = Image.fromarray(np.asarray(array, dtype=np.uint8) * 255, mode="L")
    else:
        values = np.asarray(apply_modality_lut(array, ds), dtype=np.float64)
        if window is None:
            center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
            if center is not None and width is not None and width > 0:
                window = Window(center, width)
        grey = _to_grey(values, window)
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            grey = 255 - grey
        image = Image.fromarray(grey, mode="L")
    if viewport is not None:
        image.thumbnail(viewport)
    out = BytesIO()
    if media_type == "image/png":
        image.save(out, format="PNG")
    else:
        image.save(out, format="JPEG", quality=max(1, min(quality, 100)))
    return out.getvalue()
