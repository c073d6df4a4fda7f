"""Platt-calibrate nodule_cnn on validation phantoms and write the scaling into the ONNX graph.

    .venv/bin/python triton_models/calibrate_cnn.py     # after train.py

The CNN is trained on balanced batches of crops, so its maximum over the ~30 slices of a
study over-states the study probability. This fits p_study = sigmoid(a * max_slice_logit + b) on
validation phantoms (seeds 2000-2059, 1-3 nodules on even seeds, none on odd ones) and
inserts Mul(a), Add(b) before the final Sigmoid (the study maximum commutes with it).
Ranking, hence ROC AUC, is unchanged; the 0.5 threshold becomes meaningful.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper
from scipy.optimize import minimize

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.phantom import make_phantom  # noqa: E402
from workers.inference.preprocess import to_cnn_input  # noqa: E402

MODEL = ROOT / "triton_models" / "nodule_cnn" / "1" / "model.onnx"


def study_logits(seeds: range) -> tuple[np.ndarray, np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(MODEL), opts, providers=["CPUExecutionProvider"])
    scores, truth = [], []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 4)) if seed % 2 == 0 else 0
        ph = make_phantom(seed, shape=(32, 512, 512), n_nodules=n)
        x = to_cnn_input(ph.hu, (ph.spacing[1], ph.spacing[2]))
        p = np.concatenate(
            [sess.run(None, {"image": x[i : i + 16]})[0] for i in range(0, len(x), 16)]
        )
        q = float(np.clip(p.max(), 1e-7, 1 - 1e-7))
        scores.append(np.log(q / (1 - q)))
        truth.append(ph.has_nodule)
    return np.array(scores), np.array(truth, dtype=float)


def main() -> None:
    model = onnx.load(str(MODEL))
    if any(n.name == "platt_mul" for n in model.graph.node):
        print("already calibrated")
        return
    z, y = study_logits(range(2000, 2060))

    def loss(ab: np.ndarray) -> float:
        t = ab[0] * z + ab[1]
        return float(np.mean(np.logaddexp(0, t) - y * t)) + 1e-3 * float(ab @ ab)

    a, b = minimize(loss, np.array([1.0, 0.0]), method="Nelder-Mead").x
    a = max(float(a), 1e-3)
    print(f"platt a={a:.4f} b={b:.4f}")
    sig = next(n for n in model.graph.node if n.op_type == "Sigmoid")
    src = sig.input[0]
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(a, np.float32), "platt_a"),
            numpy_helper.from_array(np.array(b, np.float32), "platt_b"),
        ]
    )
    idx = list(model.graph.node).index(sig)
    mul = helper.make_node("Mul", [src, "platt_a"], ["platt_scaled"], name="platt_mul")
    add = helper.make_node("Add", ["platt_scaled", "platt_b"], ["platt_logit"], name="platt_add")
    sig.input[0] = "platt_logit"
    model.graph.node.insert(idx, add)
    model.graph.node.insert(idx, mul)
    onnx.checker.check_model(model)
    onnx.save(model, str(MODEL))
    print(f"wrote {MODEL}")


if __name__ == "__main__":
    main()
