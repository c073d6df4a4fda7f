"""Train the chest radiograph nodule model on synthetic radiographs and export it to ONNX.

    .venv/bin/pip install torch==2.13.0 onnx      # dev tools only, not runtime dependencies
    OMP_NUM_THREADS=1 .venv/bin/python triton_models/train_chest_xray.py

Writes triton_models/chest_xray_nodule/1/model.onnx (calibrated) and prints the held-out
metrics as JSON; see chest_xray_nodule/README.md. Data: digitally reconstructed radiographs
of the chest phantoms (``gateway.phantom.radiograph``): PA and AP, MONOCHROME1 and 2,
mirrored or not, 0.14-0.2 mm detectors downsampled; preprocessed exactly as the pipeline
does (``workers.inference.chest_xray.to_radiograph_input``).

Model: fully convolutional CNN (a full-resolution 3 x 3 convolution, three stride-2
stages, two dilated convolutions), a logit map with one cell per 8 x 8 input pixels
(13.6 mm), trained on 128 x 128 crops (half around a nodule drawn with weight 1 / radius,
half nodule-free, a quarter of those around mined false positives) with BCE on the crop's
maximum plus a class-balanced BCE per cell; Platt scaling fitted on validation radiographs
is folded into the exported graph.

Seeds (phantom seeds; each phantom gives several projections): training 10000-10599 and
small-nodule phantoms 11000-11199, validation/calibration 12000-12099, design 13000-13099,
held-out test 14000-14199 (scored once, with the final model), tests 15000...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.phantom.radiograph import chest_phantom, make_radiograph  # noqa: E402
from workers.inference.chest_xray import (  # noqa: E402
    CXR_SIZE,
    CXR_SPACING_MM,
    CXR_STRIDE,
    CXR_THRESHOLD,
    image_probability,
    radiograph_findings,
    to_radiograph_input,
)

TRAIN_SEED0, SMALL_SEED0, VAL_SEED0, DEV_SEED0, TEST_SEED0 = 10000, 11000, 12000, 13000, 14000
HIT_MARGIN_MM = 5.0
"""A finding hits a nodule when it lies within the nodule's radius plus this margin."""


class ChestXrayNet(nn.Module):
    """Stride-8 fully convolutional detector: logit map (N, 1, H/8, W/8)."""

    def __init__(self, channels: tuple[int, int, int, int, int] = (8, 16, 32, 48, 64)) -> None:
        super().__init__()

        def cbr(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(
                    cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False
                ),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        c0, c1, c2, c3, c4 = channels
        layers = cbr(1, c0)  # full resolution first: an 8 mm nodule is 5 pixels wide
        layers += cbr(c0, c1, 2) + cbr(c1, c1)
        layers += cbr(c1, c2, 2) + cbr(c2, c2)
        layers += cbr(c2, c3, 2) + cbr(c3, c3)
        layers += cbr(c3, c4, dilation=2) + cbr(c4, c4, dilation=4)
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(c4, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Calibrated(nn.Module):
    """sigmoid(a * logit + b) per cell: the exported ``score_map``."""

    def __init__(self, net: nn.Module, a: float, b: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("a", torch.tensor(a, dtype=torch.float32))
        self.register_buffer("b", torch.tensor(b, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x) * self.a + self.b)


@dataclass
class Data:
    x: np.ndarray
    """(N, 256, 256) float16 model inputs."""
    nodules: list[list[tuple[float, float, float]]] = field(default_factory=list)
    """Per image: (row, col, radius) of each nodule on the model grid."""

    @property
    def positive(self) -> np.ndarray:
        return np.array([bool(n) for n in self.nodules])


def model_sample(
    seed: int, projection: int, long_side_px: int | None, phantom: object | None = None
) -> tuple[np.ndarray, list[tuple[float, float, float]], object]:
    """One preprocessed radiograph, its nodules on the model grid and the radiograph."""
    rad = make_radiograph(
        seed,
        phantom=phantom,  # type: ignore[arg-type]
        projection=projection,
        long_side_px=long_side_px,
    )
    x, grid = to_radiograph_input(
        rad.pixels, rad.pixel_spacing, rad.exposure.photometric_interpretation
    )
    nods = []
    for n in rad.nodules:
        r, c = grid.to_model(n.row, n.column)
        nods.append((r, c, n.radius_px * rad.geometry.spacing_mm / CXR_SPACING_MM))
    return x[0, 0], nods, rad


def make_training_data(n_phantoms: int, n_small: int, projections: int, seed: int) -> Data:
    """``projections`` radiographs of each training phantom (seeds 10000.., as
    ``chest_phantom`` draws them) and of ``n_small`` phantoms with 2-3 nodules of 8-14 mm
    (seeds 11000..), so that the faintest nodules are not rare. Long side 500-900 px: the
    quantum noise is per mm2, so the model input does not depend on the image size."""
    rng = np.random.default_rng(seed)
    xs, nods = [], []
    phantoms = [(s, None, (8.0, 30.0)) for s in range(TRAIN_SEED0, TRAIN_SEED0 + n_phantoms)]
    phantoms += [(s, 2 + s % 2, (8.0, 14.0)) for s in range(SMALL_SEED0, SMALL_SEED0 + n_small)]
    for s, n_nodules, diameter in phantoms:
        ph = chest_phantom(s, n_nodules, diameter)
        for p in range(projections):
            x, n, _ = model_sample(s, p, int(rng.integers(500, 901)), ph)
            xs.append(x.astype(np.float16))
            nods.append(n)
    return Data(np.stack(xs), nods)


def dense_target(
    nodules: list[tuple[float, float, float]], top: int, left: int, cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: 1 within half a radius + 5.7 px of a nodule centre (so at least one cell),
    no weight up to the radius + 12 px, 0 elsewhere."""
    target = np.zeros((cells, cells), np.float32)
    weight = np.ones((cells, cells), np.float32)
    centre = np.arange(cells) * CXR_STRIDE + (CXR_STRIDE - 1) / 2.0
    for r, c, rad in nodules:
        d = np.hypot((centre + top - r)[:, None], (centre + left - c)[None, :])
        weight[d <= rad + 12.0] = 0.0
        target[d <= 0.5 * rad + 5.7] = 1.0
    weight[target > 0] = 1.0
    return target, weight


def sample_crops(
    data: Data, bs: int, crop: int, rng: np.random.Generator, hard: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Half crops around a nodule, half of nodule-free images (a quarter of the batch
    around mined false positives once ``hard`` is given). Crop corners are multiples of the
    stride so that the cells align with the whole image's."""
    cells = crop // CXR_STRIDE
    # nodules drawn with weight 1 / radius: the small ones are the hard ones
    flat = [(k, j) for k, ns in enumerate(data.nodules) for j in range(len(ns))]
    w = np.array([1.0 / max(data.nodules[k][j][2], 2.0) for k, j in flat])
    w /= w.sum()
    neg_img = np.flatnonzero(~data.positive)
    xb = np.empty((bs, 1, crop, crop), np.float32)
    yb = np.zeros((bs, 1), np.float32)
    tb = np.zeros((bs, 1, cells, cells), np.float32)
    wb = np.ones((bs, 1, cells, cells), np.float32)
    hi = CXR_SIZE - crop
    for i in range(bs):
        if i < bs // 2:
            k, j = flat[int(rng.choice(len(flat), p=w))]
            r, c, rad = data.nodules[k][j]
            m = min(rad + 4.0, crop / 2.0)
            top = r - rng.uniform(m, crop - m)
            left = c - rng.uniform(m, crop - m)
        elif hard is not None and len(hard) and i >= 3 * bs // 4:
            k, r, c = (int(v) for v in hard[int(rng.integers(len(hard)))])
            top = r - rng.uniform(16, crop - 16)
            left = c - rng.uniform(16, crop - 16)
        else:
            k = int(rng.choice(neg_img))
            top, left = rng.uniform(0, hi), rng.uniform(0, hi)
        top = int(min(max(round(top / CXR_STRIDE) * CXR_STRIDE, 0), hi))
        left = int(min(max(round(left / CXR_STRIDE) * CXR_STRIDE, 0), hi))
        xb[i, 0] = data.x[k, top : top + crop, left : left + crop]
        if data.nodules[k]:
            tb[i, 0], wb[i, 0] = dense_target(data.nodules[k], top, left, cells)
            yb[i, 0] = float(tb[i, 0].max() > 0)
    return xb, yb, tb, wb


@torch.no_grad()
def mine_hard_negatives(net: nn.Module, data: Data, keep: int, per_image: int = 3) -> np.ndarray:
    """The ``keep`` highest-scoring cells (image, row, col) on whole nodule-free images."""
    net.eval()
    found: list[tuple[float, int, int, int]] = []
    neg = np.flatnonzero(~data.positive)
    for s in range(0, len(neg), 32):
        idx = neg[s : s + 32]
        maps = net(torch.from_numpy(data.x[idx, None].astype(np.float32)))[:, 0].numpy()
        for k, m in zip(idx, maps, strict=True):
            for flat in np.argsort(m, axis=None)[-per_image:]:
                a, b = np.unravel_index(flat, m.shape)
                found.append(
                    (float(m[a, b]), int(k), int(a * CXR_STRIDE + 4), int(b * CXR_STRIDE + 4))
                )
    net.train()
    found.sort(reverse=True)
    keep = min(keep, len(found))
    print(f"mined {len(found)} cells, kept {keep}, logit >= {found[keep - 1][0]:.2f}", flush=True)
    return np.array([f[1:] for f in found[:keep]], dtype=np.int64)


def augment(x: torch.Tensor, g: torch.Generator, *maps: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Left-right flip (maps follow), gamma, contrast, brightness, noise."""
    n = x.shape[0]
    flip = (torch.rand(n, generator=g) < 0.5)[:, None, None, None]
    out = [torch.where(flip, t.flip(-1), t) for t in (x, *maps)]
    x = out[0]
    gamma = torch.exp((torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 0.5)
    x = x.clamp(min=0) ** gamma
    scale = 1.0 + 0.2 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    shift = 0.1 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    noise = torch.randn(x.shape, generator=g) * (0.02 * torch.rand(n, 1, 1, 1, generator=g))
    return (x * scale + shift + noise, *out[1:])


def train(data: Data, steps: int, seed: int, crop: int, bs: int, hard_keep: int) -> ChestXrayNet:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = ChestXrayNet()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    mine_at = {int(steps * 0.4), int(steps * 0.7)} if hard_keep else set()
    hard: np.ndarray | None = None
    t0 = time.time()
    for step in range(steps):
        if step in mine_at:
            hard = mine_hard_negatives(net, data, hard_keep)
        xb, yb, tb, wb = sample_crops(data, bs, crop, rng, hard)
        xt, tt, wt = augment(torch.from_numpy(xb), g, torch.from_numpy(tb), torch.from_numpy(wb))
        logits = net(xt)
        loss = F.binary_cross_entropy_with_logits(logits.amax(dim=(2, 3)), torch.from_numpy(yb))
        cell = F.binary_cross_entropy_with_logits(logits, tt, reduction="none")
        pos = wt * tt
        neg = wt * (1 - tt)
        loss = loss + (cell * pos).sum() / pos.sum().clamp(min=1) + (cell * neg).sum() / neg.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    return net.eval()


def held_out(
    seeds: range, long_side_px: int | None = None
) -> tuple[np.ndarray, list[list[tuple[float, float, float]]], list[object]]:
    """Full-size radiographs (one projection per phantom seed, everything drawn from it)."""
    xs, nods, rads = [], [], []
    for s in seeds:
        x, n, rad = model_sample(s, 0, long_side_px)
        xs.append(x)
        nods.append(n)
        rads.append(rad)
    return np.stack(xs)[:, None], nods, rads


@torch.no_grad()
def max_logits(net: nn.Module, x: np.ndarray) -> np.ndarray:
    out = [net(torch.from_numpy(x[i : i + 16])).amax(dim=(1, 2, 3)) for i in range(0, len(x), 16)]
    return torch.cat(out).numpy()


def fit_platt(z: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.optimize import minimize

    def loss(ab: np.ndarray) -> float:
        t = ab[0] * z + ab[1]
        return float(np.mean(np.logaddexp(0, t) - y * t)) + 1e-3 * float(ab @ ab)

    a, b = minimize(loss, np.array([1.0, 0.0]), method="Nelder-Mead").x
    return max(float(a), 1e-3), float(b)


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    pos, neg = scores[truth], scores[~truth]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def evaluate(model_path: Path, seeds: range, long_side_px: int | None = None) -> dict[str, float]:
    """Image-level and localisation metrics of the exported ONNX model on ``seeds``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    probs, truth = [], []
    nodules = hits = findings = on_nodule = 0
    diam_hits: dict[str, list[int]] = {"8-12": [0, 0], "12-20": [0, 0], "20-30": [0, 0]}
    for s in seeds:
        rad = make_radiograph(s, long_side_px=long_side_px)
        x, grid = to_radiograph_input(
            rad.pixels, rad.pixel_spacing, rad.exposure.photometric_interpretation
        )
        score_map = sess.run(None, {"image": x})[0][0, 0]
        probs.append(image_probability(score_map))
        truth.append(rad.has_nodule)
        found = radiograph_findings(score_map, grid, CXR_THRESHOLD)
        findings += len(found)
        sp = rad.geometry.spacing_mm
        for f in found:
            on_nodule += any(
                np.hypot(f.row - n.row, f.column - n.column) * sp
                <= n.radius_px * sp + HIT_MARGIN_MM
                for n in rad.nodules
            )
        for n in rad.nodules:
            hit = any(
                np.hypot(f.row - n.row, f.column - n.column) * sp
                <= n.radius_px * sp + HIT_MARGIN_MM
                for f in found
            )
            nodules += 1
            hits += hit
            key = "8-12" if n.diameter_mm < 12 else "12-20" if n.diameter_mm < 20 else "20-30"
            diam_hits[key][0] += hit
            diam_hits[key][1] += 1
    p, t = np.array(probs), np.array(truth)
    pred = p >= CXR_THRESHOLD
    tp, fp = int((pred & t).sum()), int((pred & ~t).sum())
    fn, tn = int((~pred & t).sum()), int((~pred & ~t).sum())
    out = {
        "images": float(len(p)),
        "positive_images": float(t.sum()),
        "auc": roc_auc(p, t),
        "accuracy": (tp + tn) / len(p),
        "sensitivity": tp / max(tp + fn, 1),
        "specificity": tn / max(tn + fp, 1),
        "f1": 2 * tp / max(2 * tp + fp + fn, 1),
        "nodules": float(nodules),
        "nodule_hit_rate": hits / max(nodules, 1),
        "finding_precision": on_nodule / max(findings, 1),
        "false_findings_per_image": (findings - on_nodule) / len(p),
        "min_positive_probability": float(p[t].min()) if t.any() else float("nan"),
        "max_negative_probability": float(p[~t].max()) if (~t).any() else float("nan"),
    }
    for key, (h, n) in diam_hits.items():
        out[f"hit_rate_{key}mm"] = h / max(n, 1)
        out[f"nodules_{key}mm"] = float(n)
    return {k: round(v, 4) for k, v in out.items()}


def export(model: nn.Module, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        model,
        (torch.zeros(2, 1, CXR_SIZE, CXR_SIZE),),
        str(out),
        input_names=["image"],
        output_names=["score_map"],
        dynamic_axes={"image": {0: "batch"}, "score_map": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--phantoms", type=int, default=600)
    ap.add_argument("--small-phantoms", type=int, default=200)
    ap.add_argument("--projections", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--hard-keep", type=int, default=1000)
    ap.add_argument("--val", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval", choices=["dev", "test", "none"], default="test")
    ap.add_argument("--eval-images", type=int, default=200)
    ap.add_argument(
        "--out",
        type=Path,
        default=ROOT / "triton_models" / "chest_xray_nodule" / "1" / "model.onnx",
    )
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    data = make_training_data(args.phantoms, args.small_phantoms, args.projections, args.seed)
    n_nod = sum(len(n) for n in data.nodules)
    print(
        f"training data {data.x.shape}, {int(data.positive.sum())} with nodules, {n_nod} "
        f"nodules ({time.time() - t0:.0f}s)",
        flush=True,
    )
    t1 = time.time()
    net = train(data, args.steps, args.seed + 1, args.crop, args.batch, args.hard_keep)
    print(f"training {time.time() - t1:.0f}s", flush=True)
    del data
    t2 = time.time()
    xv, nv, _ = held_out(range(VAL_SEED0, VAL_SEED0 + args.val))
    z = max_logits(net, xv)
    y = np.array([bool(n) for n in nv], dtype=float)
    a, b = fit_platt(z, y)
    print(f"platt a={a:.4f} b={b:.4f} on {len(y)} validation images ({time.time() - t2:.0f}s)")
    export(Calibrated(net, a, b).eval(), args.out)
    if args.eval != "none":
        seed0 = TEST_SEED0 if args.eval == "test" else DEV_SEED0
        seeds = range(seed0, seed0 + args.eval_images)
        metrics = evaluate(args.out, seeds)
        print(f"seeds {seeds.start}-{seeds.stop - 1}: {json.dumps(metrics)}", flush=True)
    print(f"total {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
