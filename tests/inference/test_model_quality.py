"""The committed ONNX models reach their targets on held-out phantoms (seeds 5000..).

Guards against a bad retrain: Dice lung >= 0.95, Dice nodule >= 0.85, CNN AUC >= 0.97
(positives: a nodule >= 5 mm; see model_metrics.evaluate_models).
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


def test_cnn_auc(metrics: dict[str, float]) -> None:
    assert (
        metrics["positive_studies"] >= 10 and metrics["studies"] - metrics["positive_studies"] >= 10
    ), metrics
    assert metrics["cnn_auc"] >= 0.97, metrics  # studies with a nodule >= 5 mm vs none
    assert metrics["cnn_accuracy"] >= 0.9, metrics
    # sub-5 mm-only studies are often missed (known limitation); guard against regressions
    assert metrics["cnn_auc_all_sizes"] >= 0.85, metrics
