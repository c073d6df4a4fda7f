"""Settings of the results builders (nested in the gateway settings as ``results``)."""

from __future__ import annotations

from pydantic import Field, field_validator

from gateway.settings_section import SettingsSection


class ResultsSettings(SettingsSection):
    """How the result objects name their maker and where they sit in the study."""

    manufacturer: str = Field(default="PACS AI gateway", max_length=64)
    manufacturer_model_name: str = Field(default="pacs-gateway", max_length=64)
    device_serial_number: str = Field(
        default="0", max_length=64, description="Serial number of this installation."
    )
    institution_name: str | None = Field(default=None, max_length=64)
    seg_series_number: int = Field(default=9001, ge=1, le=2**31 - 1)
    sr_series_number: int = Field(default=9002, ge=1, le=2**31 - 1)
    # The viewer forms (docs/results.md, "Forms per destination"): new series in the source study.
    gsps_series_number: int = Field(default=9003, ge=1, le=2**31 - 1)
    sc_series_number: int = Field(default=9004, ge=1, le=2**31 - 1)
    ko_series_number: int = Field(default=9005, ge=1, le=2**31 - 1)
    gsps_series_description: str = Field(default="AI findings (presentation state)", max_length=64)
    sc_series_description: str = Field(
        default="AI key images - NOT FOR PRIMARY DIAGNOSIS", max_length=64
    )
    ko_series_description: str = Field(default="AI key images", max_length=64)
    point_colour: tuple[int, int, int] = Field(
        default=(255, 200, 0),
        description="Colour [R, G, B] of localised findings (points on a radiograph) in the "
        "presentation state and key images: their pipelines declare none.",
    )

    @field_validator("point_colour")
    @classmethod
    def _colour(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= c <= 255 for c in value):
            raise ValueError(f"expected colour values 0-255, found {list(value)}")
        return value
