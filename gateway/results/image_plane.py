"""Points in patient coordinates (LPS, mm) as SCOORD image coordinates on one image."""

from __future__ import annotations

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset


def image_coordinates(image: Dataset, points_mm: NDArray[np.float64]) -> NDArray[np.float64]:
    """(N, 3) patient points to (N, 2) (column, row) image coordinates, 0.0 being the top left
    corner of the top left pixel (SCOORD, PS3.3 C.18.6.1.2), by the image's position,
    orientation and pixel spacing. The points are projected onto the image plane: a point
    measured on this slice lies in it, up to the slice stacking of the volume it was measured
    in (uneven spacing within tolerance moves it along the normal, never within the plane)."""
    to_image = hd.spatial.ReferenceToImageTransformer(
        image_position=[float(v) for v in image.ImagePositionPatient],
        image_orientation=[float(v) for v in image.ImageOrientationPatient],
        pixel_spacing=[float(v) for v in image.PixelSpacing],
    )
    return np.asarray(to_image(np.asarray(points_mm, dtype=np.float64))[:, :2], np.float64)
