"""One condition against one value: every operator, case and spaces, numbers, missing values."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.routing.conditions import evaluate_condition
from gateway.routing.config import Condition, SeriesSelectionSettings

OPERATORS = [
    "equals",
    "not_equals",
    "in",
    "contains",
    "matches",
    "less_than",
    "less_or_equal",
    "greater_than",
    "greater_or_equal",
]


def check(attribute: str, operator: str, expected: Any, value: Any) -> bool:
    condition = Condition(attribute=attribute, operator=operator, value=expected)
    return evaluate_condition(condition, value, "series 3").passed


@pytest.mark.parametrize(
    ("attribute", "operator", "expected", "value", "passed"),
    [
        ("modality", "equals", "ct", " CT ", True),
        ("modality", "equals", "CT", "MR", False),
        ("modality", "not_equals", "ct", "CT", False),
        ("modality", "not_equals", "ct", "MR", True),
        ("modality", "in", ["mr", " ct"], "CT", True),
        ("modality", "in", ["mr", "pt"], "CT", False),
        ("series_description", "contains", "LUNG", "Thin lung 1mm", True),
        ("series_description", "contains", "bone", "Thin lung 1mm", False),
        ("series_description", "matches", r"^thin\b.*\d+\s*mm$", "THIN LUNG 1 MM", True),
        ("series_description", "matches", r"^lung", "Thin lung", False),
        ("slice_thickness", "less_than", 1.5, 1.25, True),
        ("slice_thickness", "less_than", 1.25, 1.25, False),
        ("slice_thickness", "less_or_equal", 1.25, 1.25, True),
        ("slice_thickness", "less_or_equal", "1.0", 1.25, False),
        ("slice_thickness", "greater_than", 1.0, 1.25, True),
        ("slice_thickness", "greater_than", 1.25, 1.25, False),
        ("series_instance_count", "greater_or_equal", 8, 8, True),
        ("series_instance_count", "greater_or_equal", 9, 8, False),
        # numeric attributes compare as numbers under equals / in
        ("slice_thickness", "equals", "1", 1.0, True),
        ("slice_thickness", "in", ["0.5", "1.00"], 1.0, True),
        ("slice_thickness", "not_equals", "1.0", 1.0, False),
        # a value that is not a number never satisfies a numeric operator
        ("slice_thickness", "less_than", 5, "thin", False),
        ("study_description", "equals", "ct chest", "CT CHEST  ", True),
        ("calling_ae", "equals", "ctscanner1", "CTSCANNER1", True),
    ],
)
def test_operator(attribute: str, operator: str, expected: Any, value: Any, passed: bool) -> None:
    assert check(attribute, operator, expected, value) is passed


def test_every_operator_is_covered_above() -> None:
    assert set(OPERATORS) == set(Condition.model_fields["operator"].annotation.__args__)  # type: ignore[union-attr]


@pytest.mark.parametrize("missing", [None, "", "   "])
@pytest.mark.parametrize("operator", OPERATORS)
def test_missing_value_fails_every_operator_but_not_equals(
    operator: str, missing: str | None
) -> None:
    numeric = operator in ("less_than", "less_or_equal", "greater_than", "greater_or_equal")
    attribute = "slice_thickness" if numeric else "body_part_examined"
    expected: Any = ["chest"] if operator == "in" else (1.0 if numeric else "chest")
    condition = Condition(attribute=attribute, operator=operator, value=expected)
    passed, explanation = evaluate_condition(condition, missing, "series 3")
    assert passed is (operator == "not_equals")
    assert f"series 3 {attribute} missing {operator}" in explanation


def test_explanation_names_series_attribute_values_and_verdict() -> None:
    condition = Condition(attribute="modality", operator="equals", value="ct")
    assert evaluate_condition(condition, "CT", "series 3") == (
        True,
        "series 3 modality 'CT' equals 'ct': yes",
    )
    threshold = Condition(attribute="slice_thickness", operator="less_or_equal", value=1.5)
    assert evaluate_condition(threshold, 2.5, "series 7").explanation == (
        "series 7 slice_thickness 2.5 less_or_equal 1.5: no"
    )
    listed = Condition(attribute="calling_ae", operator="in", value=["CT1", "CT2"])
    assert evaluate_condition(listed, "MR1").explanation == (
        "study calling_ae 'MR1' in ['CT1', 'CT2']: no"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"attribute": "modality", "operator": "in", "value": "CT"}, "expects a list"),
        ({"attribute": "modality", "operator": "equals", "value": ["CT"]}, "found a list"),
        (
            {"attribute": "modality", "operator": "less_than", "value": 3},
            "expects a numeric attribute",
        ),
        (
            {"attribute": "slice_thickness", "operator": "less_than", "value": "thin"},
            "expects a number",
        ),
        (
            {"attribute": "series_description", "operator": "matches", "value": "(unclosed"},
            "valid regular expression",
        ),
    ],
)
def test_inconsistent_conditions_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Condition(**fields)


def test_selection_settings_refuse_an_empty_slice_range() -> None:
    with pytest.raises(ValidationError, match="min_slices <= max_slices, found 10 > 5"):
        SeriesSelectionSettings(min_slices=10, max_slices=5)
