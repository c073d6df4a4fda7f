"""Evaluate one routing condition against one attribute value, with a readable explanation.

Semantics (see `gateway.routing.config`): text comparisons ignore case and surrounding
spaces; numeric operators compare floats; a missing value (None or blank) satisfies only
`not_equals`. Explanations name the subject ("study", "series 3") and the attribute value,
never patient identity: callers pass only routing attributes.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import NamedTuple

from gateway.routing.config import NUMERIC_ATTRIBUTES, Condition

AttributeValue = str | float | int | None

_NUMERIC_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "less_than": operator.lt,
    "less_or_equal": operator.le,
    "greater_than": operator.gt,
    "greater_or_equal": operator.ge,
}


class ConditionResult(NamedTuple):
    passed: bool
    explanation: str


def series_label(series_number: int | None, series_instance_uid: str) -> str:
    """How explanations name a series: by number, by UID when it has none."""
    if series_number is not None:
        return f"series {series_number}"
    return f"series {series_instance_uid}"


def _text(value: str | float | int) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).strip()


def _shown(value: str | float | int | list[str]) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value.strip())
    return _text(value)


def _number(value: str | float | int) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _equal(attribute: str, value: str | float | int, expected: str | float) -> bool:
    if attribute in NUMERIC_ATTRIBUTES:
        # "1" and 1.0 are the same slice thickness; text compare only non-numbers
        found, wanted = _number(value), _number(expected)
        if found is not None and wanted is not None:
            return found == wanted
    return _text(value).casefold() == _text(expected).casefold()


def is_missing(value: AttributeValue) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _passes(condition: Condition, value: str | float | int) -> bool:
    op, expected = condition.operator, condition.value
    if op == "in":
        assert isinstance(expected, list)  # the Condition validator guarantees it
        return any(_equal(condition.attribute, value, item) for item in expected)
    assert not isinstance(expected, list)  # likewise for every other operator
    if op == "equals":
        return _equal(condition.attribute, value, expected)
    if op == "not_equals":
        return not _equal(condition.attribute, value, expected)
    if op == "contains":
        return _text(expected).casefold() in _text(value).casefold()
    if op == "matches":
        return re.search(str(expected), _text(value), re.IGNORECASE) is not None
    found, wanted = _number(value), _number(expected)
    if found is None or wanted is None:
        return False  # a value that is not a number never satisfies a numeric operator
    return _NUMERIC_COMPARISONS[op](found, wanted)


def evaluate_condition(
    condition: Condition, value: AttributeValue, subject: str = "study"
) -> ConditionResult:
    """Test `condition` on `value`; `subject` names what the value belongs to in the
    explanation, e.g. "study" or "series 3"."""
    expected = _shown(condition.value)
    if is_missing(value):
        passed = condition.operator == "not_equals"
        shown = "missing"
    else:
        assert value is not None  # narrowed by is_missing
        passed = _passes(condition, value)
        shown = _shown(value)
        if condition.operator in _NUMERIC_COMPARISONS and _number(value) is None:
            shown += " (not a number)"
    verdict = "yes" if passed else "no"
    return ConditionResult(
        passed,
        f"{subject} {condition.attribute} {shown} {condition.operator} {expected}: {verdict}",
    )
