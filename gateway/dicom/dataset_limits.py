"""Bounds on what one received dataset may cost the listener (memory, inflation, nesting)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.settings import DicomSettings

MB = 1024 * 1024


class DatasetTooLarge(Exception):
    """Bigger than a configured bound: refused with 0xA700, the message says the bound."""


@dataclass(frozen=True, slots=True)
class DatasetLimits:
    max_dataset_bytes: int = 1024 * MB  # as received over P-DATA, per C-STORE
    max_inflated_bytes: int = 1024 * MB  # a Deflated Explicit VR Little Endian body, inflated
    max_sequence_depth: int = 64  # sequences inside sequences

    @classmethod
    def from_settings(cls, dicom: DicomSettings) -> DatasetLimits:
        return cls(
            max_dataset_bytes=dicom.max_dataset_mb * MB,
            max_inflated_bytes=dicom.max_inflated_mb * MB,
            max_sequence_depth=dicom.max_sequence_depth,
        )
