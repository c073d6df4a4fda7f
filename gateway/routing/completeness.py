"""Is the series chosen for the model complete? Judged from what ingest indexed per instance.

A sender that dies mid-series leaves a study that still completes after the quiet period.
Three signs of missing instances, each reported as what was expected and what was found:

- a gap in the slice positions along the normal: a spacing more than `gap_factor` times the
  series' median spacing *and* the median of its neighbours (so a series whose spacing steps
  from 2.5 to 5 mm, or jitters, is not a gap, but a missing run is);
- missing numbers inside the run of Instance Numbers (when every instance has a distinct one);
- fewer instances than Images in Acquisition (0020,1002), per acquisition, when it is set.

A series that simply stops early (the first 37 of 300 sent in order, no Images in
Acquisition) shows none of these: nothing in what arrived says more was coming. How the
association that carried it ended does (gateway/series_interruption.py): a fourth sign is an
association that ended without A-RELEASE, with no instance of the series arriving since.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select

from gateway.models import Instance, Series
from gateway.routing.config import SeriesCompletenessSettings

_NEIGHBOURS = 5  # spacings each side that give the local expected spacing
_SAME_POSITION_MM = 1e-3


@dataclass(frozen=True, slots=True)
class InstanceFacts:
    instance_number: int | None
    slice_position: float | None
    images_in_acquisition: int | None
    acquisition_number: int | None


@dataclass(frozen=True, slots=True)
class SliceGap:
    start: float  # position along the normal (mm) before the gap
    end: float  # position after it
    expected_spacing: float  # what the neighbouring slices show (mm)

    @property
    def width(self) -> float:
        return self.end - self.start

    @property
    def missing(self) -> int:
        return max(1, round(self.width / self.expected_spacing) - 1)


@dataclass(frozen=True, slots=True)
class SeriesCompleteness:
    instance_count: int
    problems: tuple[str, ...]  # empty when complete

    @property
    def complete(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str:
        return "; ".join(self.problems)


def slice_gaps(positions: Sequence[float], gap_factor: float) -> list[SliceGap]:
    """Gaps between consecutive distinct positions (sorted here); none with < 3 positions."""
    distinct: list[float] = []
    for position in sorted(positions):
        if not distinct or position - distinct[-1] > _SAME_POSITION_MM:
            distinct.append(position)
    if len(distinct) < 3:
        return []
    spacings = [b - a for a, b in itertools.pairwise(distinct)]
    overall = statistics.median(spacings)
    gaps: list[SliceGap] = []
    for i, spacing in enumerate(spacings):
        around = spacings[max(0, i - _NEIGHBOURS) : i] + spacings[i + 1 : i + 1 + _NEIGHBOURS]
        local = statistics.median(around)
        if spacing > gap_factor * overall and spacing > gap_factor * local:
            gaps.append(SliceGap(distinct[i], distinct[i + 1], min(overall, local)))
    return gaps


def _ranges(numbers: Sequence[int], limit: int = 3) -> str:
    runs: list[tuple[int, int]] = []
    for n in numbers:
        if runs and n == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], n)
        else:
            runs.append((n, n))
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs[:limit])
    return text + (", ..." if len(runs) > limit else "")


def _mm(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _gap_problem(gaps: Sequence[SliceGap], found: int) -> str:
    largest = max(gaps, key=lambda g: g.width)
    where = f"a {_mm(largest.width)} mm gap between z={largest.start:.1f} and z={largest.end:.1f}"
    missing = sum(g.missing for g in gaps)
    if len(gaps) == 1:
        return (
            f"expected slice spacing {_mm(largest.expected_spacing)} mm, found {where} "
            f"(about {missing} of {found + missing} slices missing)"
        )
    return (
        f"expected slice spacing {_mm(largest.expected_spacing)} mm, found {len(gaps)} gaps, "
        f"the largest {where} (about {missing} of {found + missing} slices missing)"
    )


def _instance_number_problem(numbers: Sequence[int | None]) -> str | None:
    if not numbers or any(n is None for n in numbers):
        return None  # no run to expect
    present = sorted(n for n in numbers if n is not None)
    if len(set(present)) != len(present):
        return None  # numbers repeat (several acquisitions or stacks): no single run
    low, high = present[0], present[-1]
    missing = sorted(set(range(low, high + 1)) - set(present))
    if not missing:
        return None
    return (
        f"expected instance numbers {low} to {high} without a break, found {len(missing)} "
        f"missing ({_ranges(missing)})"
    )


def _acquisition_problems(instances: Sequence[InstanceFacts]) -> list[str]:
    groups: dict[int | None, list[InstanceFacts]] = {}
    for instance in instances:
        groups.setdefault(instance.acquisition_number, []).append(instance)
    problems = []
    for acquisition, members in sorted(groups.items(), key=lambda g: (g[0] is None, g[0] or 0)):
        counts = [m.images_in_acquisition for m in members if m.images_in_acquisition]
        expected = max(counts, default=0)
        if len(members) < expected:
            where = "" if len(groups) == 1 else f" in acquisition {acquisition}"
            problems.append(
                f"expected {expected} instances (Images in Acquisition){where}, "
                f"found {len(members)}"
            )
    return problems


def _interruption_problem(interruption: str) -> str:
    return (
        f"expected the sender to release its association after the series, found the {interruption}"
    )


def judge_series(
    instances: Sequence[InstanceFacts],
    settings: SeriesCompletenessSettings,
    interruption: str | None = None,
) -> SeriesCompleteness:
    """`interruption`: how the last association that carried the series ended without
    A-RELEASE, when no instance of it arrived since."""
    problems: list[str] = []
    if settings.check_images_in_acquisition:
        problems += _acquisition_problems(instances)
    positions = [i.slice_position for i in instances if i.slice_position is not None]
    gaps = slice_gaps(positions, settings.gap_factor)
    if gaps:
        problems.append(_gap_problem(gaps, len(positions)))
    if settings.check_instance_numbers:
        numbers = _instance_number_problem([i.instance_number for i in instances])
        if numbers is not None:
            problems.append(numbers)
    if settings.check_association_release and interruption is not None:
        problems.append(_interruption_problem(interruption))
    return SeriesCompleteness(len(instances), tuple(problems))


def check_series_completeness(
    connection: Connection, series_instance_uid: str, settings: SeriesCompletenessSettings
) -> SeriesCompleteness:
    """Judge a stored series from its instance rows (no file is read)."""
    rows = connection.execute(
        select(
            Instance.instance_number,
            Instance.slice_position,
            Instance.images_in_acquisition,
            Instance.acquisition_number,
        )
        .join(Series, Instance.series_id == Series.id)
        .where(Series.series_instance_uid == series_instance_uid)
    ).all()
    return judge_series(
        [InstanceFacts(*row) for row in rows],
        settings,
        _interruption(connection, series_instance_uid),
    )


def _naive(value: datetime) -> datetime:
    # SQLite returns naive datetimes, PostgreSQL aware ones; all of ours are UTC.
    return value.replace(tzinfo=None)


def _interruption(connection: Connection, series_instance_uid: str) -> str | None:
    """The stored detail of an unreleased end, unless an instance arrived after it (the
    sender came back; that association's end will clear or renew the mark)."""
    row = connection.execute(
        select(Series.interrupted_at, Series.interrupted_detail, func.max(Instance.received_at))
        .join(Instance, Instance.series_id == Series.id)
        .where(Series.series_instance_uid == series_instance_uid)
        .group_by(Series.id)
    ).first()
    if row is None or row[0] is None:
        return None
    interrupted_at, detail, latest = row
    if latest is not None and _naive(latest) > _naive(interrupted_at):
        return None
    return str(detail or "association ended without A-RELEASE")
