"""Train the demo models on synthetic phantoms and export them to ONNX.

    .venv/bin/pip install torch==2.13.0 onnx     # dev tools only, not runtime dependencies
    .venv/bin/python triton_models/train.py       # writes triton_models/*/1/model.onnx
    .venv/bin/python triton_models/calibrate_cnn.py   # Platt scaling of nodule_cnn

The committed models: U-Net from `train.py` (defaults), CNN from
`train.py --only cnn --cnn-steps 1500` then `calibrate_cnn.py`; logs in training_log.txt.

Models (see each model's README.md):
  lung_nodule_unet  2D U-Net, slices -> softmax over {background, lung, nodule}
  nodule_cnn        2D CNN, slice -> probability that the slice shows a nodule; the study
                    probability is the maximum over its slices.
Seeds: training phantoms 1000.., validation 2000.., held-out test 3000.. (tests use 5000..).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.phantom import LABEL_NODULE, make_phantom  # noqa: E402
from workers.inference.preprocess import (  # noqa: E402
    MODEL_SIZE,
    MODEL_SPACING_MM,
    resample_slices,
    to_model_input,
)

TRAIN_SEED0, VAL_SEED0, TEST_SEED0 = 1000, 2000, 3000


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    def __init__(self, base: int = 8, classes: int = 3) -> None:
        super().__init__()
        c = [base, base * 2, base * 4, base * 8]
        self.e0 = conv_block(1, c[0])
        self.e1 = conv_block(c[0], c[1])
        self.e2 = conv_block(c[1], c[2])
        self.b = conv_block(c[2], c[3])
        self.u2 = nn.ConvTranspose2d(c[3], c[2], 2, stride=2)
        self.d2 = conv_block(c[2] * 2, c[2])
        self.u1 = nn.ConvTranspose2d(c[2], c[1], 2, stride=2)
        self.d1 = conv_block(c[1] * 2, c[1])
        self.u0 = nn.ConvTranspose2d(c[1], c[0], 2, stride=2)
        self.d0 = conv_block(c[0] * 2, c[0])
        self.head = nn.Conv2d(c[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e0 = self.e0(x)
        e1 = self.e1(F.max_pool2d(e0, 2))
        e2 = self.e2(F.max_pool2d(e1, 2))
        b = self.b(F.max_pool2d(e2, 2))
        d2 = self.d2(torch.cat([self.u2(b), e2], 1))
        d1 = self.d1(torch.cat([self.u1(d2), e1], 1))
        d0 = self.d0(torch.cat([self.u0(d1), e0], 1))
        return self.head(d0)


class SliceCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()

        def down(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(down(1, 16), down(16, 32), down(32, 48), down(48, 64))
        self.fc = nn.Linear(128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([f.amax(dim=(2, 3)), f.mean(dim=(2, 3))], 1)
        return self.fc(pooled)


class Softmax(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


class Sigmoid(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(x))


def random_spacing(rng: np.random.Generator) -> tuple[float, float, float]:
    pix = float(rng.uniform(0.6, 0.9))
    return (float(rng.choice([1.25, 2.0, 2.5, 3.0, 5.0, 7.0])), pix, pix)


def make_dataset(seeds: range, slices: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model-grid inputs (N,1,H,W) float16, labels (N,H,W) uint8, slice has-nodule (N,)."""
    xs, ys, cs = [], [], []
    for seed in seeds:
        rng = np.random.default_rng(seed + 7_000_000)
        n_nod = int(rng.integers(0, 6)) if rng.random() > 0.25 else 0
        ph = make_phantom(
            seed, shape=(slices, 512, 512), spacing=random_spacing(rng), n_nodules=n_nod
        )
        pix = (ph.spacing[1], ph.spacing[2])
        x = to_model_input(ph.hu, pix)
        onehot = np.stack([(ph.labels == k) for k in range(3)], 1).astype(np.float32)
        y = np.argmax(
            resample_slices(onehot, pix, (MODEL_SPACING_MM,) * 2, (MODEL_SIZE,) * 2, 0.0), 1
        ).astype(np.uint8)
        xs.append(x.astype(np.float16))
        ys.append(y)
        cs.append((ph.labels == LABEL_NODULE).any(axis=(1, 2)))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(cs)


def augment(
    x: torch.Tensor, y: torch.Tensor | None, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor | None]:
    n = x.shape[0]
    flip = torch.rand(n, generator=g) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if y is not None:
        y = torch.where(flip[:, None, None], y.flip(-1), y)
    # random shift (crop + pad) of up to 12 px
    dy, dx = (int(v) for v in torch.randint(-12, 13, (2,), generator=g))
    x = torch.roll(x, (dy, dx), (-2, -1))
    if y is not None:
        y = torch.roll(y, (dy, dx), (-2, -1))
    # contrast / brightness / noise
    scale = 1.0 + 0.1 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    shift = 0.05 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    noise = torch.randn(x.shape, generator=g) * (0.03 * torch.rand(n, 1, 1, 1, generator=g))
    return x * scale + shift + noise, y


def dice_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = torch.softmax(logits, 1)
    onehot = F.one_hot(y.long(), 3).permute(0, 3, 1, 2).float()
    inter = (p * onehot).sum((0, 2, 3))
    den = p.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = (2 * inter + 1.0) / (den + 1.0)
    return 1.0 - dice[1:].mean()


def batches_with_positives(
    pos: np.ndarray, neg: np.ndarray, bs: int, rng: np.random.Generator
) -> np.ndarray:
    k = bs // 2 if len(pos) else 0
    return np.concatenate([rng.choice(pos, k), rng.choice(neg, bs - k)])


def train_unet(data, steps: int, seed: int) -> nn.Module:
    x, y, c = data
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = UNet()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    pos, neg = np.flatnonzero(c), np.flatnonzero(~c)
    t0 = time.time()
    for step in range(steps):
        idx = batches_with_positives(pos, neg, 8, rng)
        xb = torch.from_numpy(x[idx].astype(np.float32))
        yb = torch.from_numpy(y[idx].astype(np.int64))
        xb, yb2 = augment(xb, yb, g)
        assert yb2 is not None
        logits = net(xb)
        loss = F.cross_entropy(logits, yb2) + dice_loss(logits, yb2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"unet step {step} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    return net.eval()


def train_cnn(data, steps: int, seed: int) -> nn.Module:
    x, _, c = data
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = SliceCNN()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    pos, neg = np.flatnonzero(c), np.flatnonzero(~c)
    t0 = time.time()
    for step in range(steps):
        idx = batches_with_positives(pos, neg, 32, rng)
        xb = torch.from_numpy(x[idx].astype(np.float32))
        yb = torch.from_numpy(c[idx].astype(np.float32))[:, None]
        xb, _ = augment(xb, None, g)
        loss = F.binary_cross_entropy_with_logits(net(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"cnn step {step} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    return net.eval()


def export(model: nn.Module, out: Path, output_name: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(2, 1, MODEL_SIZE, MODEL_SIZE)
    torch.onnx.export(
        model,
        (dummy,),
        str(out),
        input_names=["image"],
        output_names=[output_name],
        dynamic_axes={"image": {0: "batch"}, output_name: {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-phantoms", type=int, default=120)
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--unet-steps", type=int, default=1800)
    ap.add_argument("--cnn-steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "triton_models")
    ap.add_argument("--only", choices=["unet", "cnn"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    data = make_dataset(range(TRAIN_SEED0, TRAIN_SEED0 + args.train_phantoms), args.slices)
    print(
        f"dataset {data[0].shape} nodule slices {int(data[2].sum())} ({time.time() - t0:.0f}s)",
        flush=True,
    )
    if args.only in (None, "unet"):
        unet = train_unet(data, args.unet_steps, args.seed)
        export(Softmax(unet), args.out / "lung_nodule_unet" / "1" / "model.onnx", "probabilities")
    if args.only in (None, "cnn"):
        cnn = train_cnn(data, args.cnn_steps, args.seed + 1)
        export(Sigmoid(cnn), args.out / "nodule_cnn" / "1" / "model.onnx", "probability")
    try:
        metrics = evaluate(args.out, range(TEST_SEED0, TEST_SEED0 + 40))
        print(json.dumps(metrics, indent=2))
    except Exception as exc:  # evaluation is re-runnable on its own
        print(f"evaluation failed: {exc!r}")
    print(f"total {time.time() - t0:.0f}s")


def evaluate(model_dir: Path, seeds: range) -> dict[str, float]:
    """Held-out metrics of the exported ONNX models (same code path as the tests)."""
    sys.path.insert(0, str(ROOT / "tests" / "inference"))
    from model_metrics import evaluate_models  # type: ignore[import-not-found]

    return evaluate_models(model_dir, seeds)


if __name__ == "__main__":
    main()
