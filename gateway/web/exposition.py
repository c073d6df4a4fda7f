"""The Prometheus text exposition format (version 0.0.4): families of counters, gauges and
histograms (cumulative `le` buckets ending at +Inf, `_sum` and `_count`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Labels = dict[str, str]


@dataclass(frozen=True)
class Histogram:
    bounds: tuple[float, ...]  # upper bounds, ascending, without +Inf
    cumulative: tuple[int, ...]  # observations <= each bound
    count: int  # all observations: the +Inf bucket
    total: float  # their sum

    def __post_init__(self) -> None:
        if len(self.cumulative) != len(self.bounds):
            raise ValueError(
                f"expected one cumulative count per bound ({len(self.bounds)}), "
                f"found {len(self.cumulative)}"
            )


@dataclass
class Family:
    name: str
    kind: Literal["counter", "gauge", "histogram"]
    help: str
    samples: list[tuple[Labels, float]] = field(default_factory=list)
    histograms: list[tuple[Labels, Histogram]] = field(default_factory=list)


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items()) + "}"


def _family_lines(family: Family) -> Iterable[str]:
    help_text = family.help.replace("\\", "\\\\").replace("\n", "\\n")
    yield f"# HELP {family.name} {help_text}"
    yield f"# TYPE {family.name} {family.kind}"
    for labels, value in family.samples:
        yield f"{family.name}{_labels(labels)} {format_value(value)}"
    for labels, histogram in family.histograms:
        for bound, count in zip(histogram.bounds, histogram.cumulative, strict=True):
            bucket = {**labels, "le": format_value(bound)}
            yield f"{family.name}_bucket{_labels(bucket)} {count}"
        yield f"{family.name}_bucket{_labels({**labels, 'le': '+Inf'})} {histogram.count}"
        yield f"{family.name}_sum{_labels(labels)} {format_value(histogram.total)}"
        yield f"{family.name}_count{_labels(labels)} {histogram.count}"


def render(families: Iterable[Family]) -> str:
    return "\n".join(line for family in families for line in _family_lines(family)) + "\n"
