"""`caliper_axes` matches each model finding to the refined component it overlaps most on
the box that holds both nodule maps (workers/inference/postprocess.py), not on two whole
volumes: every match must be the one the whole volumes give."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from gateway.pipelines.measure import label_components
from gateway.pipelines.refine import most_overlapping
from workers.inference.findings import LABEL_NODULE
from workers.inference.postprocess import _components_in_common_box


def _blobs(rng: np.random.Generator, shape: tuple[int, int, int], count: int) -> NDArray[np.uint8]:
    labels = np.ones(shape, np.uint8)
    for z, y, x in rng.integers((0, 0, 0), np.array(shape) - 3, size=(count, 3)):
        labels[z : z + 3, y : y + rng.integers(2, 5), x : x + rng.integers(2, 5)] = LABEL_NODULE
    return labels


@pytest.mark.parametrize("seed", range(6))
def test_matches_equal_those_on_the_whole_volumes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (24, 60, 50)
    model = _blobs(rng, shape, 8)
    refined = _blobs(rng, shape, 8)
    refined[model == LABEL_NODULE] = np.where(
        rng.random(int((model == LABEL_NODULE).sum())) < 0.7, LABEL_NODULE, 1
    )  # refined outlines that overlap the model's partly, and others of their own
    whole_model = label_components(model, LABEL_NODULE)
    whole_refined = label_components(refined, LABEL_NODULE)
    boxed_model, boxed_refined = _components_in_common_box(model, refined)
    assert boxed_model.size < whole_model.size
    for component in range(1, int(whole_model.max()) + 2):  # and one that does not exist
        assert most_overlapping(boxed_model, component, boxed_refined) == most_overlapping(
            whole_model, component, whole_refined
        )


def test_a_map_without_nodules() -> None:
    rng = np.random.default_rng(9)
    model = _blobs(rng, (10, 30, 30), 3)
    nothing = np.ones_like(model)
    for a, b in ((model, nothing), (nothing, model), (nothing, nothing)):
        boxed_a, boxed_b = _components_in_common_box(a, b)
        assert most_overlapping(boxed_a, 1, boxed_b) == 0
