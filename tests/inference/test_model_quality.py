"""The committed ONNX models reach their targets on held-out phantoms (seeds 5000.., 7000..).

Guards against a bad retrain: Dice lung >= 0.95, Dice nodule >= 0.85; CNN study ROC AUC
>= 0.97 with every study that has a nodule (3-30 mm, the smallest included) as positive,
and accuracy, sensitivity, specificity at the 0.5 threshold (see
model_metrics.evaluate_models).
"""

from __future__ import annotations

import pytest

from tests.inference.conftest import MODEL_REPOSITORY
from tests.inference.model_metrics import evaluate_models


@pytest.fixture(scope="module")
def metrics() -> dict[str, float]:
    return evaluate_models(MODEL_REPOSITORY, range(5000, 5040))


def test_unet_lung_dice(metrics: dict[str, float]) -> None:
    assert metrics["dice_lung"] >= 0.95, metrics


def test_unet_nodule_dice(metrics: dict[str, float]) -> None:
    assert metrics["dice_nodule"] >= 0.85, metrics


def _check_cnn(m: dict[str, float]) -> None:
    assert m["positive_studies"] >= 10 and m["studies"] - m["positive_studies"] >= 10, m
    assert m["small_only_positive_studies"] >= 1, m  # the sub-5 mm case is exercised
    assert m["cnn_auc_all_sizes"] >= 0.97, m  # any nodule (3-30 mm) vs none
    assert m["cnn_accuracy"] >= 0.9, m
    assert m["cnn_sensitivity"] >= 0.85, m
    assert m["cnn_specificity"] >= 0.85, m


def test_cnn_auc_all_nodule_sizes(metrics: dict[str, float]) -> None:
    _check_cnn(metrics)


def test_cnn_auc_all_nodule_sizes_second_range() -> None:
    """A second held-out range, so that passing on 5000.. is not luck (CNN only)."""
    _check_cnn(evaluate_models(MODEL_REPOSITORY, range(7000, 7040), unet=False))
