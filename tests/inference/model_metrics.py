"""Held-out quality metrics of the committed ONNX models (used by train.py and the tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from gateway.phantom import LABEL_LUNG, LABEL_NODULE, make_phantom
from workers.inference.preprocess import labels_from_probabilities, to_model_input

MIN_DETECTABLE_MM = 5.0


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


def evaluate_models(
    model_dir: Path, seeds: range | list[int], slices: int = 32
) -> dict[str, float]:
    """Dice per class (over all voxels of the nodule-bearing phantoms) and CNN study metrics.

    Even seeds get 1-3 nodules (3-30 mm), odd seeds none; the U-Net is scored on the even
    ones. The CNN metrics (``cnn_*``) count a study positive when its largest nodule is at
    least ``MIN_DETECTABLE_MM`` (5 mm, two model pixels) and leave out studies whose only
    nodules are smaller (the CNN sees 2.4 mm pixels); ``cnn_auc_all_sizes`` keeps them as
    positives.
    """
    unet = _session(model_dir / "lung_nodule_unet" / "1" / "model.onnx")
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
        x = to_model_input(ph.hu, pix)
        prob = float(_run(cnn, x).max())
        scores.append(prob)
        truth.append(ph.has_nodule)
        largest.append(max((n.diameter_mm for n in ph.nodules if n.voxel_count), default=0.0))
        if ph.has_nodule:
            probs = _run(unet, x)
            pred = labels_from_probabilities(probs, pix, ph.shape[1:])
            for k in (LABEL_LUNG, LABEL_NODULE):
                p = pred == k
                t = ph.labels == k
                inter[k] += int(np.count_nonzero(p & t))
                total[k] += int(np.count_nonzero(p)) + int(np.count_nonzero(t))
    s_all = np.array(scores)
    y_all = np.array(truth)
    keep = ~y_all | (np.array(largest) >= MIN_DETECTABLE_MM)
    s = s_all[keep]
    y = y_all[keep]
    pred_pos = s >= 0.5
    tp = int((pred_pos & y).sum())
    tn = int((~pred_pos & ~y).sum())
    fp = int((pred_pos & ~y).sum())
    fn = int((~pred_pos & y).sum())
    return {
        "dice_lung": 2 * inter[LABEL_LUNG] / max(total[LABEL_LUNG], 1),
        "dice_nodule": 2 * inter[LABEL_NODULE] / max(total[LABEL_NODULE], 1),
        "cnn_auc": roc_auc(s, y),
        "cnn_auc_all_sizes": roc_auc(s_all, y_all),
        "sub5mm_only_studies_left_out": float((~keep).sum()),
        "cnn_accuracy": (tp + tn) / len(y),
        "cnn_sensitivity": tp / max(tp + fn, 1),
        "cnn_specificity": tn / max(tn + fp, 1),
        "cnn_f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "studies": float(len(y)),
        "positive_studies": float(y.sum()),
    }
