"""The SEG's map of segment numbers (gateway/results/segmentation.py) is written inside each
label's box: it must hold exactly the voxels `segment_mask` finds for each segment, numbered
in the findings' order, and leave out segments without voxels."""

from __future__ import annotations

import numpy as np

from gateway.pipelines.findings import SegmentFinding
from gateway.pipelines.measure import label_components, segment_mask
from gateway.results.segmentation import segment_number_map


def _segment(label: int, name: str, index: int, component: int) -> SegmentFinding:
    return SegmentFinding(
        label=label, name=name, index=index, component_label=component, voxel_count=1
    )


def test_the_map_holds_each_segments_voxels_by_its_number() -> None:
    rng = np.random.default_rng(7)
    labels = np.zeros((30, 64, 64), dtype=np.uint8)
    labels[2:28, 5:60, 5:60] = 1  # a whole-label segment ("lung")
    for z, y, x in rng.integers((0, 0, 0), (28, 61, 61), size=(12, 3)):
        labels[z : z + 2, y : y + 3, x : x + 3] = 2  # components ("nodule"), some merged
    labels[29, 63, 63] = 2  # one at the volume's corner: the box reaches the edges
    components = int(label_components(labels, 2).max())
    assert components > 5
    segments = [
        _segment(1, "lung", 0, 0),
        _segment(3, "vessel", 0, 0),  # a label with no voxel: left out
        _segment(2, "nodule", 1, components),  # out of raster order
        _segment(2, "nodule", 2, 1),
        _segment(2, "nodule", 3, components + 1),  # a component that does not exist
        _segment(2, "nodule", 4, 3),
        _segment(4, "mass", 1, 1),  # a label without voxels, as a component
    ]
    numbers, kept = segment_number_map(labels, segments)
    assert [s.key for s in kept] == ["lung", "nodule-1", "nodule-2", "nodule-4"]
    assert numbers.dtype == np.uint8 and numbers.shape == labels.shape
    expected = np.zeros_like(numbers)
    for number, segment in enumerate(kept, start=1):
        expected[segment_mask(labels, segment)] = number
    assert np.array_equal(numbers, expected)
    assert set(np.unique(numbers)) == {0, 1, 2, 3, 4}
