"""Synthetic chest CT phantoms (volumes with ground truth) and their DICOM CT series."""

from gateway.phantom.dicom import write_ct_series
from gateway.phantom.volume import (
    LABEL_BACKGROUND,
    LABEL_LUNG,
    LABEL_NODULE,
    Nodule,
    Phantom,
    make_phantom,
)

__all__ = [
    "LABEL_BACKGROUND",
    "LABEL_LUNG",
    "LABEL_NODULE",
    "Nodule",
    "Phantom",
    "make_phantom",
    "write_ct_series",
]
