"""A shadow run against the primary run of the same series: present or absent, the score,
and the Dice of each segment. Segments are paired by name ('lung' with 'lung'); the
findings of a per-component segment ('nodule-1', 'nodule-2') are matched one to one by the
largest overlap first, and a finding without a partner counts as Dice 0."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from gateway.monitoring.outcome import StudyOutcome
from gateway.pipelines.findings import PipelineFindings
from gateway.pipelines.measure import label_components


@dataclass(frozen=True)
class SegmentMatch:
    name: str
    """The segment's name in both pipeline files, e.g. 'nodule'."""
    primary: str | None
    """The primary's finding ('nodule-1'); None: only the shadow found it."""
    shadow: str | None
    dice: float
    primary_voxels: int
    shadow_voxels: int


@dataclass(frozen=True)
class Comparison:
    primary: StudyOutcome
    shadow: StudyOutcome
    segments: tuple[SegmentMatch, ...]
    problem: str | None = None
    """Why the segments could not be compared (different slices or grids)."""

    @property
    def findings_agree(self) -> bool | None:
        if self.primary.positive is None or self.shadow.positive is None:
            return None
        return self.primary.positive == self.shadow.positive

    @property
    def score_difference(self) -> float | None:
        """Shadow minus primary."""
        if self.primary.score is None or self.shadow.score is None:
            return None
        return self.shadow.score - self.primary.score

    @property
    def mean_dice(self) -> float | None:
        if not self.segments:
            return None
        return sum(m.dice for m in self.segments) / len(self.segments)


def _slice_order(primary: PipelineFindings, shadow: PipelineFindings) -> list[int] | str:
    """For each of the primary's slices, the shadow's index of the same slice; or why the
    two label maps cannot be laid over each other."""
    if sorted(primary.sop_instance_uids) != sorted(shadow.sop_instance_uids):
        return (
            f"expected both runs on the same {len(primary.sop_instance_uids)} slices, found "
            f"{len(shadow.sop_instance_uids)} in the shadow's, not all the same"
        )
    if primary.labels.shape != shadow.labels.shape:
        return (
            f"expected label maps of one shape, found {primary.labels.shape} (primary) and "
            f"{shadow.labels.shape} (shadow)"
        )
    where = {uid: k for k, uid in enumerate(shadow.sop_instance_uids)}
    return [where[uid] for uid in primary.sop_instance_uids]


@dataclass(frozen=True)
class _Findings:
    """One run's findings of one segment name on the (primary's) slice order: the voxels of
    its label, and, for per-component segments, the component number of each voxel."""

    mask: NDArray[np.bool_]
    regions: NDArray[np.int32] | None
    """None: the whole label is one finding (number 1)."""
    keys: dict[int, str]
    """Finding key by number; a component too small to be a finding has none."""

    def sizes(self) -> dict[int, int]:
        if self.regions is None:
            return {1: int(np.count_nonzero(self.mask))} if self.keys else {}
        counts = np.bincount(self.regions[self.mask], minlength=max(self.keys, default=0) + 1)
        return {n: int(counts[n]) for n in self.keys}

    def numbers_at(self, where: NDArray[np.bool_]) -> NDArray[np.int64]:
        if self.regions is None:
            return np.ones(int(np.count_nonzero(where)), dtype=np.int64)
        return self.regions[where].astype(np.int64)


def _findings(findings: PipelineFindings, name: str, order: list[int] | None) -> _Findings:
    """Components are numbered on the run's own label map, as its findings were, then laid
    in `order` (None: as they are). Whole labels stay masks: no pass over the volume more
    than needed (a 300-slice CT holds 78 million voxels)."""
    labels = findings.labels
    segments = [s for s in findings.segments if s.name == name]
    if not segments:
        return _Findings(np.zeros(labels.shape, dtype=bool), None, {})
    label = segments[0].label
    mask = labels == label
    regions = None
    if any(s.index != 0 for s in segments):
        regions = label_components(labels, label)
        keys = {s.component_label: s.key for s in segments}
    else:
        keys = {1: segments[0].key}
    if order is not None:
        mask = mask[order]
        regions = None if regions is None else regions[order]
    return _Findings(np.asarray(mask), regions, keys)


def _overlaps(primary: _Findings, shadow: _Findings) -> dict[tuple[int, int], int]:
    """Shared voxels per pair of finding numbers."""
    both = primary.mask & shadow.mask
    if primary.regions is None and shadow.regions is None:
        shared = int(np.count_nonzero(both))
        return {(1, 1): shared} if shared else {}
    p_ids, s_ids = primary.numbers_at(both), shadow.numbers_at(both)
    width = int(s_ids.max(initial=0)) + 1
    pairs, counts = np.unique(p_ids * width + s_ids, return_counts=True)
    return {divmod(int(pair), width): int(n) for pair, n in zip(pairs, counts, strict=True)}


def _match_segment(name: str, primary: _Findings, shadow: _Findings) -> list[SegmentMatch]:
    p_sizes, s_sizes = primary.sizes(), shadow.sizes()
    overlaps = {
        pair: n
        for pair, n in _overlaps(primary, shadow).items()
        if pair[0] in primary.keys and pair[1] in shadow.keys
    }
    matches: list[SegmentMatch] = []
    used_p: set[int] = set()
    used_s: set[int] = set()
    for (p, s), shared in sorted(overlaps.items(), key=lambda item: (-item[1], item[0])):
        if p in used_p or s in used_s:
            continue
        used_p.add(p)
        used_s.add(s)
        p_n, s_n = p_sizes[p], s_sizes[s]
        dice = 2.0 * shared / (p_n + s_n)
        matches.append(
            SegmentMatch(name, primary.keys[p], shadow.keys[s], round(dice, 4), p_n, s_n)
        )
    for p, key in sorted(primary.keys.items()):
        if p not in used_p:
            matches.append(SegmentMatch(name, key, None, 0.0, p_sizes[p], 0))
    for s, key in sorted(shadow.keys.items()):
        if s not in used_s:
            matches.append(SegmentMatch(name, None, key, 0.0, 0, s_sizes[s]))
    return matches


def compare_runs(
    primary: PipelineFindings,
    shadow: PipelineFindings,
    primary_outcome: StudyOutcome,
    shadow_outcome: StudyOutcome,
) -> Comparison:
    order = _slice_order(primary, shadow)
    if isinstance(order, str):
        return Comparison(primary_outcome, shadow_outcome, (), problem=order)
    names = sorted({s.name for s in (*primary.segments, *shadow.segments)})
    segments: list[SegmentMatch] = []
    for name in names:
        segments += _match_segment(
            name, _findings(primary, name, None), _findings(shadow, name, order)
        )
    return Comparison(primary_outcome, shadow_outcome, tuple(segments))
