"""What a retrieval reported: instances stored and refused (with the first reason)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.dicom.store_instance import StoreOutcome


@dataclass
class Retrieved:
    stored: int = 0  # by this process (C-GET, WADO-RS); a C-MOVE's land at the listener
    refused: int = 0
    first_refusal: str | None = None
    source_completed: int | None = None  # sub-operations the source counted (C-MOVE, C-GET)
    source_failed: int = 0

    def count(self, result: StoreOutcome) -> None:
        if result.stored:
            self.stored += 1
            return
        self.refused += 1
        if self.first_refusal is None:
            self.first_refusal = f"0x{result.status:04X} {result.reason or ''}".strip()

    def describe(self) -> str:
        parts = []
        if self.source_completed is not None:
            parts.append(f"the source reported {self.source_completed} sent")
        if self.source_failed:
            parts.append(f"{self.source_failed} failed")
        if self.stored or self.refused:
            parts.append(f"{self.stored} stored here")
        if self.refused:
            parts.append(f"{self.refused} refused (first: {self.first_refusal})")
        return ", ".join(parts) or "nothing received"
