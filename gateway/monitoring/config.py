"""Settings of the model watch (nested in the gateway settings as ``monitoring``)."""

from __future__ import annotations

from pydantic import Field

from gateway.settings_section import SettingsSection


class ModelWatchSettings(SettingsSection):
    """How control limits are learned and how far a day may stray from them."""

    baseline_studies: int = Field(
        default=100,
        ge=2,
        le=100000,
        description="Control limits of a pipeline version (with its models) are learned from "
        "its first this many studies, and never move after; a new version learns its own.",
    )
    sigma: float = Field(
        default=3.0,
        gt=0,
        le=10,
        description="A day is flagged (amber) when a statistic lies more than this many "
        "standard errors from the baseline's mean (a Shewhart chart with the day's count).",
    )
    days: int = Field(
        default=30, ge=1, le=366, description="Days shown on the model watch page (UTC days)."
    )
