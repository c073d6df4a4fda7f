"""A result object written to the results directory (no DICOM libraries needed to use it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StoredResult:
    kind: str
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    study_instance_uid: str
    relative_path: str
    """Relative to the results directory."""
