"""Routing rules as settings (the seed of the `routing_rules` table the admin UI edits)."""

from __future__ import annotations

import enum
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.settings_section import SettingsSection

# Attributes a condition can test. Series level: tested per series, and a rule selects the
# series that pass all of them. Study level: tested once for the study.
SERIES_ATTRIBUTES = (
    "modality",
    "body_part_examined",
    "series_description",
    "slice_thickness",
    "series_instance_count",
)
STUDY_ATTRIBUTES = ("study_description", "calling_ae")
NUMERIC_ATTRIBUTES = ("slice_thickness", "series_instance_count")
Attribute = Literal[
    "modality",
    "body_part_examined",
    "series_description",
    "slice_thickness",
    "series_instance_count",
    "study_description",
    "calling_ae",
]
Operator = Literal[
    "equals",  # case-insensitive, surrounding spaces ignored
    "not_equals",
    "in",  # value is a list; equals any
    "contains",  # case-insensitive substring
    "matches",  # Python regular expression, searched, case-insensitive
    "less_than",
    "less_or_equal",
    "greater_than",
    "greater_or_equal",
]
_NUMERIC_OPERATORS = ("less_than", "less_or_equal", "greater_than", "greater_or_equal")


class Priority(enum.StrEnum):
    URGENT = "urgent"
    ROUTINE = "routine"


class Condition(SettingsSection):
    """`attribute operator value`; a missing attribute never satisfies a condition (except
    `not_equals`)."""

    attribute: Attribute
    operator: Operator = "equals"
    value: str | float | list[str]

    @model_validator(mode="after")
    def _consistent(self) -> Condition:
        if self.operator == "in" and not isinstance(self.value, list):
            raise ValueError(f"operator 'in' expects a list value, found {self.value!r}")
        if self.operator != "in" and isinstance(self.value, list):
            raise ValueError(f"operator {self.operator!r} expects one value, found a list")
        if self.operator in _NUMERIC_OPERATORS:
            if self.attribute not in NUMERIC_ATTRIBUTES:
                raise ValueError(
                    f"operator {self.operator!r} expects a numeric attribute "
                    f"({', '.join(NUMERIC_ATTRIBUTES)}), found {self.attribute!r}"
                )
            try:
                float(self.value)  # type: ignore[arg-type]
            except (TypeError, ValueError) as exc:
                raise ValueError(
                    f"operator {self.operator!r} expects a number, found {self.value!r}"
                ) from exc
        if self.operator == "matches":
            try:
                re.compile(str(self.value))
            except re.error as exc:
                raise ValueError(
                    f"expected a valid regular expression, found {self.value!r}: {exc}"
                ) from exc
        return self


class PriorRequirement(SettingsSection):
    """A rule's request for the most recent prior study of the same patient (same modality,
    same body part unless turned off, within `within_years`), pulled from the source archive
    (`pull.source`) before the job runs; the job waits at most `wait_s` for it."""

    within_years: float = Field(default=5.0, gt=0, le=100)
    same_body_part: bool = True
    wait_s: float = Field(
        default=600.0,
        ge=0,
        le=7 * 86400,  # a deadline must stay a representable date; a week is already long
        description="How long the job waits for the prior (at most a week); then it runs "
        "without one and the reason is recorded.",
    )


class RuleSettings(SettingsSection):
    """A routing rule. Rules are tried in order; the first enabled rule that matches wins.
    A rule without conditions matches every study: put one last as the default."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    enabled: bool = True
    priority: Priority = Priority.ROUTINE
    conditions: list[Condition] = Field(default_factory=list)
    pipeline: str = Field(
        default="lung_nodules",
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="Name of a registered pipeline (checked against the registry at start-up "
        "and in the rule editor).",
    )
    destinations: list[str] | None = Field(
        default=None, description="Destination names; None means every enabled destination."
    )
    rerun_on_update: bool = Field(
        default=False, description="Run again when late instances update a processed study."
    )
    prior: PriorRequirement | None = Field(
        default=None,
        description="Fetch the patient's most recent prior study first (see docs/pull.md).",
    )
    shadow_pipeline: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="A second registered pipeline (e.g. a candidate model version) run in "
        "shadow on the same series: its results are built and stored, never delivered, and "
        "compared with the rule's pipeline (see docs/model-watch.md). The settings and the "
        "admin UI refuse the rule's own pipeline; the router skips such a shadow, audited.",
    )
    trigger: Literal["study", "series"] = Field(
        default="study",
        description="'study': start once the study is complete (an MPPS or storage "
        "commitment listing every instance, else the quiet period). 'series': start as soon "
        "as the series chosen for the model is complete (MPPS, storage commitment, Images in "
        "Acquisition reached, or `series_quiet_period_s`), while other series still arrive.",
    )
    series_quiet_period_s: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="'series' trigger: the chosen series is complete once no instance of it "
        "arrived for this long (None: only the signals, then the study's quiet period).",
    )
    quiet_period_s: float | None = Field(
        default=None,
        gt=0,
        le=86400,
        description="This rule's study quiet period, in place of assembly.quiet_period_s "
        "(the fallback when no completion signal comes). None: the assembly's.",
    )


class SeriesSelectionSettings(SettingsSection):
    """Which of the selected series goes to the model: the thinnest axial series of an
    accepted modality with enough slices (ties: more slices, then lower series number).

    Each pipeline declares its own (its `accepts`); in the settings (`routing.series_selection`)
    only the fields set explicitly apply, over every pipeline's."""

    modalities: list[str] = Field(default_factory=lambda: ["CT"])
    min_slices: int = Field(default=8, ge=1)
    max_slices: int = Field(default=2000, ge=1)
    axial_tolerance_deg: float = Field(
        default=30.0, ge=0, le=90, description="Slice normal within this of the body axis."
    )
    geometry: Literal["volume", "image"] = Field(
        default="volume",
        description="'volume': axial slices required; 'image': a projection image (no check).",
    )
    view_positions: list[str] = Field(
        default_factory=list,
        description="'image': ViewPosition values accepted, most preferred first (e.g. PA, "
        "AP); another value is passed over, none comes after the listed ones. Empty: any.",
    )

    def overridden_by(self, site: SeriesSelectionSettings) -> SeriesSelectionSettings:
        """These criteria with the fields `site` sets explicitly."""
        return self.model_copy(update={k: getattr(site, k) for k in site.model_fields_set})

    @model_validator(mode="after")
    def _slice_range(self) -> SeriesSelectionSettings:
        if self.min_slices > self.max_slices:
            raise ValueError(
                f"expected min_slices <= max_slices, found {self.min_slices} > {self.max_slices}"
            )
        return self


class SeriesCompletenessSettings(SettingsSection):
    """When the series chosen for the model looks incomplete (a gap in positions or instance
    numbers, fewer instances than Images in Acquisition, its sender's association ended
    without A-RELEASE), its job is held, then failed."""

    hold_s: float = Field(
        default=1800.0,
        ge=0,
        description="How long a study with an incomplete series waits for the missing "
        "instances before its job fails with the reason; 0 fails at once.",
    )
    gap_factor: float = Field(
        default=1.5,
        gt=1.0,
        description="A slice spacing counts as a gap above this times the expected spacing.",
    )
    check_instance_numbers: bool = Field(
        default=True, description="Missing numbers inside the series' Instance Number run."
    )
    check_images_in_acquisition: bool = Field(
        default=True, description="Fewer instances than Images in Acquisition (0020,1002)."
    )
    check_association_release: bool = Field(
        default=True,
        description="An association that stored instances of the series ended without "
        "A-RELEASE (A-ABORT, a dropped connection) and none arrived since: the sender died "
        "mid-series. Turn off for senders that never release their associations.",
    )


class RoutingSettings(SettingsSection):
    rules: list[RuleSettings] = Field(default_factory=list)
    series_selection: SeriesSelectionSettings = Field(default_factory=SeriesSelectionSettings)
    series_completeness: SeriesCompletenessSettings = Field(
        default_factory=SeriesCompletenessSettings
    )

    @field_validator("rules")
    @classmethod
    def _unique(cls, value: list[RuleSettings]) -> list[RuleSettings]:
        names = [r.name for r in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"expected unique rule names, found {duplicates} twice")
        return value
