"""Settings of the results builders (nested in the gateway settings as ``results``)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ResultsSettings(BaseModel):
    """How the SEG and SR name their maker and where they sit in the study."""

    manufacturer: str = Field(default="PACS AI gateway", max_length=64)
    manufacturer_model_name: str = Field(default="pacs-gateway", max_length=64)
    device_serial_number: str = Field(
        default="0", max_length=64, description="Serial number of this installation."
    )
    institution_name: str | None = Field(default=None, max_length=64)
    seg_series_number: int = Field(default=9001, ge=1, le=2**31 - 1)
    sr_series_number: int = Field(default=9002, ge=1, le=2**31 - 1)
