"""The comparison of a shadow run with the primary run: segments paired by name, findings
matched one to one by overlap (a finding without partner is Dice 0), the shadow's slices laid
over the primary's by SOP Instance UID whatever order it read them in; present/absent and
the score from each job's summary."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from gateway.monitoring.outcome import StudyOutcome, study_outcome
from gateway.pipelines.findings import PipelineFindings, SegmentFinding
from gateway.pipelines.measure import label_components
from gateway.shadow.compare import compare_runs

SHAPE = (6, 20, 20)
UIDS = tuple(f"1.2.3.{k}" for k in range(SHAPE[0]))


def findings(labels: NDArray[np.uint8], uids: tuple[str, ...] = UIDS) -> PipelineFindings:
    """Findings as the analysers make them: 'lung' whole, each nodule component by size."""
    segments = [SegmentFinding(1, "lung", 0, 0, int((labels == 1).sum()))]
    regions = label_components(labels, 2)
    sizes = sorted(
        ((int((regions == c).sum()), c) for c in range(1, int(regions.max()) + 1)), reverse=True
    )
    segments += [SegmentFinding(2, "nodule", k, c, n) for k, (n, c) in enumerate(sizes, 1)]
    return PipelineFindings(
        pipeline="test",
        labels=labels,
        sop_instance_uids=uids,
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.1",
        frame_of_reference_uid="1.2.3.2",
        segments=tuple(segments),
        image_findings=(),
        models=(),
        runner="test",
    )


def volume(nodules: list[tuple[slice, slice, slice]]) -> NDArray[np.uint8]:
    labels = np.zeros(SHAPE, dtype=np.uint8)
    labels[:, 1:19, 1:19] = 1
    for box in nodules:
        labels[box] = 2
    return labels


A = (slice(1, 4), slice(2, 7), slice(2, 7))  # 3 x 5 x 5 = 75 voxels
A_SHIFTED = (slice(1, 4), slice(2, 7), slice(3, 8))  # one voxel over: 60 shared
B = (slice(1, 3), slice(12, 16), slice(12, 16))  # 32 voxels
C = (slice(3, 5), slice(12, 14), slice(2, 4))  # 8 voxels, far from B
POSITIVE = StudyOutcome(0.8, True, 2)
NEGATIVE = StudyOutcome(0.3, False, 1)


def by_pair(comparison: object) -> dict[tuple[str | None, str | None], float]:
    return {(m.primary, m.shadow): m.dice for m in comparison.segments}  # type: ignore[attr-defined]


def test_findings_matched_by_overlap_unmatched_ones_score_zero() -> None:
    primary = findings(volume([A, B]))
    shadow = findings(volume([A_SHIFTED, C]))
    comparison = compare_runs(primary, shadow, POSITIVE, NEGATIVE)
    pairs = by_pair(comparison)
    assert pairs[("nodule-1", "nodule-1")] == pytest.approx(2 * 60 / 150)
    assert pairs[("nodule-2", None)] == 0.0  # B: only the primary found it
    assert pairs[(None, "nodule-2")] == 0.0  # C: only the shadow
    lung = pairs[("lung", "lung")]
    assert 0.95 < lung < 1.0  # the nodules took different voxels from the lung label
    assert comparison.mean_dice == pytest.approx((0.8 + lung) / 4)
    assert comparison.findings_agree is False
    assert comparison.score_difference == pytest.approx(0.3 - 0.8)
    assert comparison.problem is None


def test_the_shadows_slices_are_laid_over_the_primarys_by_uid() -> None:
    labels = volume([A, B])
    primary = findings(labels)
    reversed_shadow = findings(labels[::-1].copy(), UIDS[::-1])
    comparison = compare_runs(primary, reversed_shadow, POSITIVE, POSITIVE)
    assert {m.dice for m in comparison.segments} == {1.0}, by_pair(comparison)
    assert comparison.findings_agree is True and comparison.score_difference == 0.0


def test_one_to_one_the_larger_overlap_wins() -> None:
    """Two shadow findings overlap one primary finding: the larger overlap is its partner,
    the other is the shadow's alone."""
    big = (slice(1, 4), slice(2, 7), slice(2, 5))  # overlaps A in 3 x 5 x 3 = 45
    small = (slice(1, 4), slice(2, 7), slice(6, 8))  # overlaps A in 3 x 5 x 1 = 15
    comparison = compare_runs(
        findings(volume([A])), findings(volume([big, small])), POSITIVE, POSITIVE
    )
    pairs = by_pair(comparison)
    assert pairs[("nodule-1", "nodule-1")] == pytest.approx(2 * 45 / (75 + 45))
    assert pairs[(None, "nodule-2")] == 0.0


def test_different_slices_are_reported_not_compared() -> None:
    other = tuple(f"9.9.{k}" for k in range(SHAPE[0]))
    comparison = compare_runs(
        findings(volume([A])), findings(volume([A]), other), POSITIVE, POSITIVE
    )
    assert comparison.segments == () and comparison.mean_dice is None
    assert comparison.problem is not None and "same 6 slices" in comparison.problem


def test_outcome_of_both_summary_forms() -> None:
    lung = {"nodule_count": 2, "nodule_probability": 0.62, "nodules": []}
    assert study_outcome(lung) == StudyOutcome(0.62, True, 2)
    generic = {
        "findings": [{"segment": "lung"}, {"segment": "nodule-1"}, {"segment": "nodule-2"}],
        "image_findings": [{"name": "nodule", "probability": 0.41, "present": False}],
        "point_findings": [],
    }
    assert study_outcome(generic) == StudyOutcome(0.41, False, 2)
    points = {"findings": [], "image_findings": [], "point_findings": [{"probability": 0.7}]}
    assert study_outcome(points) == StudyOutcome(0.7, True, 1)
    assert study_outcome(None) is None and study_outcome({"results": []}) is None
