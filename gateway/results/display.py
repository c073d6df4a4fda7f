"""How a source image is shown in the viewer forms: its window (VOI), its pixels windowed to
8 bits, and its patient orientation letters."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut


@dataclass(frozen=True)
class Window:
    """A linear VOI window (PS3.3 C.11.2.1.2) in modality values (HU for CT)."""

    center: float
    width: float
    explanation: str


# Lung window: nodules (soft tissue) stand out against aerated lung (-850 HU).
CT_LUNG_WINDOW = Window(-600.0, 1500.0, "LUNG")


def _first(value: object) -> float:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return float(value[0])
    return float(str(value))


def source_window(ds: Dataset) -> Window | None:
    """The image's own first window, if it has one."""
    if ds.get("WindowCenter") is None or ds.get("WindowWidth") is None:
        return None
    explanation = ds.get("WindowCenterWidthExplanation") or ""
    if isinstance(explanation, Sequence) and not isinstance(explanation, str):
        explanation = explanation[0] if explanation else ""
    return Window(_first(ds.WindowCenter), _first(ds.WindowWidth), str(explanation))


def default_window(ds: Dataset) -> Window | None:
    """What to show an image without a window of its own with: the lung window for CT,
    nothing (the viewer's choice) otherwise."""
    return CT_LUNG_WINDOW if str(ds.get("Modality", "")).upper() == "CT" else None


def display_window(ds: Dataset) -> Window | None:
    return source_window(ds) or default_window(ds)


def with_pixels(ds: Dataset) -> Dataset:
    """The image with its pixel data: as given, or read again from the file it was read
    from (the results builders get headers read with stop_before_pixels)."""
    if "PixelData" in ds:
        return ds
    filename = getattr(ds, "filename", None)
    if isinstance(filename, str | os.PathLike) and os.path.exists(filename):
        return pydicom.dcmread(filename)
    raise ValueError(
        f"expected the pixel data of image {ds.get('SOPInstanceUID', '?')} or the file it "
        f"was read from, found neither"
    )


def display_pixels(ds: Dataset) -> NDArray[np.uint8]:
    """The image as the viewer forms show it, 0 black to 255 white: modality LUT, then the
    display window (linear), else the image's VOI LUT, else its 0.5-99.5 percentile range;
    MONOCHROME1 inverted."""
    image = with_pixels(ds)
    stored = np.asarray(image.pixel_array)
    if stored.ndim != 2:
        raise ValueError(
            f"expected a single-frame grayscale image, found pixel array shape {stored.shape}"
        )
    window = display_window(image)
    if window is not None:
        values = np.asarray(apply_modality_lut(stored, image), dtype=np.float64)
        c, w = window.center, max(window.width - 1.0, 1.0)
        scaled = ((values - (c - 0.5)) / w + 0.5) * 255.0
    elif "VOILUTSequence" in image:
        values = np.asarray(apply_voi_lut(stored, image), dtype=np.float64)
        bits = int(image.VOILUTSequence[0].LUTDescriptor[2])
        scaled = values / float((1 << bits) - 1) * 255.0
    else:
        values = np.asarray(apply_modality_lut(stored, image), dtype=np.float64)
        low, high = np.percentile(values, [0.5, 99.5])
        scaled = (values - low) / max(float(high - low), 1e-6) * 255.0
    out = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    if str(image.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        out = np.asarray(255 - out, dtype=np.uint8)
    return out


def _letters(direction: NDArray[np.float64]) -> str:
    """Patient orientation letters of a direction (LPS), strongest component first."""
    order = np.argsort(-np.abs(direction))
    return "".join(
        ("LPH"[axis] if direction[axis] > 0 else "RAF"[axis])
        for axis in order
        if abs(direction[axis]) > 1e-3
    )


def patient_orientation(ds: Dataset) -> tuple[str, str] | None:
    """(rows, columns) direction letters (PS3.3 C.7.6.1.1.1): from the image orientation,
    else the image's own PatientOrientation, else None."""
    if "ImageOrientationPatient" in ds:
        cosines = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        return _letters(cosines[:3]), _letters(cosines[3:])
    given = ds.get("PatientOrientation")
    if given is not None and len(given) == 2 and all(given):
        return str(given[0]), str(given[1])
    return None
