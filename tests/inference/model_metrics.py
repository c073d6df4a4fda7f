"""Held-out quality metrics of the committed ONNX models (used by train.py and the tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from gateway.phantom import LABEL_LUNG, LABEL_NODULE, make_phantom
from workers.inference.preprocess import labels_from_probabilities, to_cnn_input, to_model_input

SMALL_NODULE_MM = 5.0
THRESHOLD = 0.5


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count half)."""
    pos = scores[labels]
    neg = scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum()
    ties = (pos[:, None] == neg[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def _run(sess: ort.InferenceSession, x: np.ndarray, batch: int = 16) -> np.ndarray:
    outs = [sess.run(None, {"image": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs)


def study_metrics(scores: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """ROC AUC and, at ``THRESHOLD``, accuracy, sensitivity, specificity and F1."""
    pred = scores >= THRESHOLD
    tp = int((pred & truth).sum())
    tn = int((~pred & ~truth).sum())
    fp = int((pred & ~truth).sum())
    fn = int((~pred & truth).sum())
    return {
        "auc": roc_auc(scores, truth),
        "accuracy": (tp + tn) / max(len(truth), 1),
        "sensitivity": tp / max(tp + fn, 1),
        "specificity": tn / max(tn + fp, 1),
        "f1": 2 * tp / max(2 * tp + fp + fn, 1),
    }


def evaluate_models(
    model_dir: Path, seeds: range | list[int], slices: int = 32, unet: bool = True
) -> dict[str, float]:
    """Dice per class (over all voxels of the nodule-bearing phantoms) and CNN study metrics.

    Even seeds get 1-3 nodules (3-30 mm), odd seeds none; the U-Net is scored on the even
    ones. The CNN study probability is the maximum over the study's slices; the ``cnn_*``
    metrics count every study with a nodule (any size, 3-30 mm) as positive.
    ``cnn_auc_largest_5mm_plus`` also reports the AUC with the studies whose only nodules
    are smaller than ``SMALL_NODULE_MM`` left out (the pass criterion of model version 1
    before its 1.2 mm retrain).
    """
    dice, s, y, largest = _evaluate(model_dir, seeds, slices, unet)
    keep = ~y | (largest >= SMALL_NODULE_MM)
    m = study_metrics(s, y)
    out = dict(dice)
    out.update(
        {
            "cnn_auc_all_sizes": m["auc"],
            "cnn_accuracy": m["accuracy"],
            "cnn_sensitivity": m["sensitivity"],
            "cnn_specificity": m["specificity"],
            "cnn_f1": m["f1"],
            "cnn_auc_largest_5mm_plus": roc_auc(s[keep], y[keep]),
            "studies": float(len(y)),
            "positive_studies": float(y.sum()),
            "small_only_positive_studies": float((~keep).sum()),
            "min_positive_probability": float(s[y].min()) if y.any() else float("nan"),
            "max_negative_probability": float(s[~y].max()) if (~y).any() else float("nan"),
        }
    )
    return out


def _evaluate(
    model_dir: Path, seeds: range | list[int], slices: int, unet: bool
) -> tuple[dict[str, float], np.ndarray, np.ndarray, np.ndarray]:
    seg = _session(model_dir / "lung_nodule_unet" / "1" / "model.onnx") if unet else None
    cnn = _session(model_dir / "nodule_cnn" / "1" / "model.onnx")
    inter = {LABEL_LUNG: 0, LABEL_NODULE: 0}
    total = {LABEL_LUNG: 0, LABEL_NODULE: 0}
    scores: list[float] = []
    truth: list[bool] = []
    largest: list[float] = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        n_nod = int(rng.integers(1, 4)) if seed % 2 == 0 else 0
        ph = make_phantom(seed, shape=(slices, 512, 512), n_nodules=n_nod)
        pix = (ph.spacing[1], ph.spacing[2])
        scores.append(float(_run(cnn, to_cnn_input(ph.hu, pix)).max()))
        truth.append(ph.has_nodule)
        largest.append(max((n.diameter_mm for n in ph.nodules if n.voxel_count), default=0.0))
        if seg is not None and ph.has_nodule:
            probs = _run(seg, to_model_input(ph.hu, pix))
            pred = labels_from_probabilities(probs, pix, ph.shape[1:])
            for k in (LABEL_LUNG, LABEL_NODULE):
                p = pred == k
                t = ph.labels == k
                inter[k] += int(np.count_nonzero(p & t))
                total[k] += int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    dice = {}
    if seg is not None:
        dice = {
            "dice_lung": 2 * inter[LABEL_LUNG] / max(total[LABEL_LUNG], 1),
            "dice_nodule": 2 * inter[LABEL_NODULE] / max(total[LABEL_NODULE], 1),
        }
    return dice, np.array(scores), np.array(truth), np.array(largest)
