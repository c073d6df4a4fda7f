"""Train the demo models on synthetic phantoms and export them to ONNX.

    .venv/bin/pip install torch==2.13.0 onnx     # dev tools only, not runtime dependencies
    .venv/bin/python triton_models/train.py       # writes triton_models/*/1/model.onnx
    .venv/bin/python triton_models/calibrate_cnn.py   # Platt scaling of nodule_cnn

The committed models: U-Net from `train.py --only unet` (defaults, 2.4 mm grid), CNN from
`train.py --only cnn` (defaults) then `calibrate_cnn.py`; logs in training_log.txt. Run
them with OMP_NUM_THREADS=1 (the script uses one torch thread): the CNN is deterministic.

Models (see each model's README.md):
  lung_nodule_unet  2D U-Net, 160x160 slices of 2.4 mm -> softmax over {background, lung,
                    nodule}
  nodule_cnn        2.5D fully convolutional CNN, 320x320 slices of 1.2 mm with their two
                    neighbours as channels -> probability that the slice shows a nodule
                    (maximum of a logit map with one cell per 16x16 pixels); the study
                    probability is the maximum over its slices. Trained on 128x128 crops:
                    half around a nodule (nodules drawn uniformly, so small ones are not
                    rare), half nodule-free, a quarter of them around false positives mined
                    on whole slices.
Seeds: training phantoms 1000.. (+ 1500.. small-nodule phantoms for the CNN), validation
2000.., held-out test 3000.. (tests use 5000.. and 7000..).
"""

from __future__ import annotations

import argparse
import itertools
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

from gateway.phantom import LABEL_NODULE, make_phantom  # noqa: E402
from workers.inference.preprocess import (  # noqa: E402
    CNN_CHANNELS,
    CNN_SIZE,
    CNN_SPACING_MM,
    MODEL_SIZE,
    MODEL_SPACING_MM,
    neighbour_indices,
    resample_slices,
    to_cnn_slices,
    to_model_input,
)

TRAIN_SEED0, SMALL_SEED0, VAL_SEED0, TEST_SEED0 = 1000, 1500, 2000, 3000
STRIDE = 16  # NoduleCNN: one logit-map cell per 16 x 16 input pixels


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


class NoduleCNN(nn.Module):
    """Fully convolutional nodule detector: a logit map at 1/16 resolution, then its maximum.

    Trained on crops and applied to whole slices: the maximum over positions (no mean
    pooling) gives the same answer for a nodule whatever the size of the image around it.
    """

    def __init__(
        self, in_channels: int = CNN_CHANNELS, channels: tuple[int, ...] = (16, 24, 48, 64)
    ) -> None:
        super().__init__()

        def cbr(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        layers = cbr(in_channels, channels[0], 2)
        for cin, cout in itertools.pairwise(channels):
            layers += cbr(cin, cout, 2) + cbr(cout, cout)
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(channels[-1], 1, 1)

    def logit_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit_map(x).amax(dim=(2, 3))


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


@dataclass
class CnnData:
    """Training slices on the CNN grid and where their nodules are."""

    x: np.ndarray
    """(N, 1, CNN_SIZE, CNN_SIZE) float16 slices on the CNN grid."""
    neighbours: np.ndarray
    """(N, 3) int: indices of the previous slice, the slice and the next one (mirrored at
    the ends of each phantom, as ``neighbour_indices``)."""
    negative: np.ndarray
    """(N,) bool: the slice has no nodule voxel at all."""
    lung_box: np.ndarray
    """(N, 4) int: lung bounding box (row0, row1, col0, col1) on the CNN grid, -1 if none."""
    nodule_slices: list[np.ndarray] = field(default_factory=list)
    """Per nodule: the slices where its cross-section is at least 35% of its largest."""
    nodule_centre: list[tuple[float, float]] = field(default_factory=list)
    """Per nodule: centre (row, col) on the CNN grid."""
    nodule_radius_px: list[float] = field(default_factory=list)
    nodule_diameter_mm: list[float] = field(default_factory=list)
    slice_nodules: dict[int, list[tuple[float, float, float, bool]]] = field(default_factory=dict)
    """Per slice with nodule voxels: (row, col, radius px, visible) of each of its nodules."""


def _to_cnn_grid(index: float, n_src: int, src_step: float) -> float:
    return (index - (n_src - 1) / 2.0) * src_step / CNN_SPACING_MM + (CNN_SIZE - 1) / 2.0


def make_cnn_dataset(phantoms: list[tuple[int, int, tuple[float, float]]], slices: int) -> CnnData:
    """Slices of phantoms given as (seed, nodule count, diameter range)."""
    xs, negs, boxes = [], [], []
    data = CnnData(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0))
    neighbours = []
    offset = 0
    for seed, n_nod, diam in phantoms:
        rng = np.random.default_rng(seed + 7_000_000)
        ph = make_phantom(
            seed,
            shape=(slices, 512, 512),
            spacing=random_spacing(rng),
            n_nodules=n_nod,
            nodule_diameter_mm=diam,
        )
        _, dy, dx = ph.spacing
        n_y, n_x = ph.shape[1:]
        xs.append(to_cnn_slices(ph.hu, (dy, dx)).astype(np.float16))
        neighbours.append(offset + neighbour_indices(ph.shape[0]))
        nod = ph.labels == LABEL_NODULE
        negs.append(~nod.any(axis=(1, 2)))
        lung = ph.labels != 0
        box = np.full((ph.shape[0], 4), -1, np.int32)
        for k in range(ph.shape[0]):
            rows = np.flatnonzero(lung[k].any(axis=1))
            cols = np.flatnonzero(lung[k].any(axis=0))
            if len(rows):
                box[k] = [
                    _to_cnn_grid(rows[0], n_y, dy),
                    _to_cnn_grid(rows[-1], n_y, dy),
                    _to_cnn_grid(cols[0], n_x, dx),
                    _to_cnn_grid(cols[-1], n_x, dx),
                ]
        boxes.append(box)
        for n in ph.nodules:
            if not n.voxel_count:
                continue
            _, cy, cx = n.center_index
            h = max(n.semi_axes_mm) + 2.0
            r0, r1 = max(int(cy - h / dy), 0), int(cy + h / dy) + 2
            c0, c1 = max(int(cx - h / dx), 0), int(cx + h / dx) + 2
            area = nod[:, r0:r1, c0:c1].sum(axis=(1, 2))
            visible = area >= 0.35 * area.max()
            centre = (_to_cnn_grid(cy, n_y, dy), _to_cnn_grid(cx, n_x, dx))
            radius = max(n.semi_axes_mm) / CNN_SPACING_MM
            data.nodule_slices.append(offset + np.flatnonzero(visible))
            data.nodule_centre.append(centre)
            data.nodule_radius_px.append(radius)
            data.nodule_diameter_mm.append(n.diameter_mm)
            for k in np.flatnonzero(area):
                data.slice_nodules.setdefault(offset + int(k), []).append(
                    (*centre, radius, bool(visible[k]))
                )
        offset += ph.shape[0]
    data.x = np.concatenate(xs)
    data.neighbours = np.concatenate(neighbours)
    data.negative = np.concatenate(negs)
    data.lung_box = np.concatenate(boxes)
    return data


def cnn_training_phantoms(
    n_phantoms: int, n_small: int
) -> list[tuple[int, int, tuple[float, float]]]:
    """The U-Net's training phantoms (0-5 nodules of 3-30 mm on 75%) plus ``n_small``
    phantoms with 2-4 nodules of 3-6 mm, so that small nodules are not rare."""
    out = []
    for seed in range(TRAIN_SEED0, TRAIN_SEED0 + n_phantoms):
        rng = np.random.default_rng(seed + 7_000_000)
        n_nod = int(rng.integers(0, 6)) if rng.random() > 0.25 else 0
        out.append((seed, n_nod, (3.0, 30.0)))
    for seed in range(SMALL_SEED0, SMALL_SEED0 + n_small):
        out.append((seed, 2 + seed % 3, (3.0, 6.0)))
    return out


def dense_target(
    nodules: list[tuple[float, float, float, bool]], top: int, left: int, cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """Target and weight of each logit-map cell of a crop: 1 where a visible nodule's disk
    overlaps the cell, no weight within one cell of a nodule (or anywhere near a nodule
    sliver), 0 elsewhere."""
    target = np.zeros((cells, cells), np.float32)
    weight = np.ones((cells, cells), np.float32)
    centre = (np.arange(cells) + 0.5) * STRIDE
    for r, c, rad, visible in nodules:
        dr = np.abs(centre - (r - top))[:, None]
        dc = np.abs(centre - (c - left))[None, :]
        near = (dr <= rad + 1.5 * STRIDE) & (dc <= rad + 1.5 * STRIDE)
        weight[near] = 0.0
        if visible:
            on = (dr <= rad + STRIDE / 2) & (dc <= rad + STRIDE / 2)
            target[on] = 1.0
    weight[target > 0] = 1.0
    return target, weight


def sample_crops(
    data: CnnData,
    bs: int,
    crop: int,
    rng: np.random.Generator,
    hard: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Half crops around a visible nodule (nodules drawn uniformly, whatever their size),
    half crops of slices without nodule voxels: centred in the lungs (80%) or anywhere, or,
    for half of them once ``hard`` is given, around a mined false-positive position.

    Returns the crops, their labels (N, 1), and the logit-map targets and weights."""
    size = data.x.shape[-1]
    cells = crop // STRIDE
    xb = np.empty((bs, CNN_CHANNELS, crop, crop), np.float32)
    yb = np.zeros((bs, 1), np.float32)
    tb = np.zeros((bs, 1, cells, cells), np.float32)
    wb = np.ones((bs, 1, cells, cells), np.float32)
    neg = np.flatnonzero(data.negative)
    for i in range(bs):
        if i < bs // 2:
            j = int(rng.integers(len(data.nodule_slices)))
            k = int(rng.choice(data.nodule_slices[j]))
            cr, cc = data.nodule_centre[j]
            m = min(data.nodule_radius_px[j] + 4.0, crop / 2.0)
            top = round(cr - rng.uniform(m, crop - m))
            left = round(cc - rng.uniform(m, crop - m))
            yb[i] = 1.0
        elif hard is not None and len(hard) and i >= 3 * bs // 4:
            k, cr, cc = (int(v) for v in hard[int(rng.integers(len(hard)))])
            top = round(cr - rng.uniform(16, crop - 16))
            left = round(cc - rng.uniform(16, crop - 16))
        else:
            k = int(rng.choice(neg))
            b = data.lung_box[k]
            if b[0] >= 0 and rng.random() < 0.8:
                cr, cc = rng.uniform(b[0], b[1] + 1), rng.uniform(b[2], b[3] + 1)
            else:
                cr, cc = rng.uniform(0, size), rng.uniform(0, size)
            top, left = int(cr) - crop // 2, int(cc) - crop // 2
        top = min(max(top, 0), size - crop)
        left = min(max(left, 0), size - crop)
        xb[i] = data.x[data.neighbours[k], 0, top : top + crop, left : left + crop]
        if yb[i, 0]:
            tb[i, 0], wb[i, 0] = dense_target(data.slice_nodules[k], top, left, cells)
    return xb, yb, tb, wb


@torch.no_grad()
def mine_hard_negatives(net: NoduleCNN, data: CnnData, keep: int, per_slice: int = 3) -> np.ndarray:
    """The ``keep`` highest-scoring positions (slice, row, col) on whole nodule-free slices."""
    net.eval()
    neg = np.flatnonzero(data.negative)
    found: list[tuple[float, int, int, int]] = []
    for s in range(0, len(neg), 32):
        idx = neg[s : s + 32]
        x = data.x[data.neighbours[idx], 0].astype(np.float32)
        maps = net.logit_map(torch.from_numpy(x))[:, 0].numpy()
        stride = data.x.shape[-1] / maps.shape[-1]
        for k, m in zip(idx, maps, strict=True):
            for flat in np.argsort(m, axis=None)[-per_slice:]:
                r, c = np.unravel_index(flat, m.shape)
                found.append(
                    (float(m[r, c]), int(k), int((r + 0.5) * stride), int((c + 0.5) * stride))
                )
    net.train()
    found.sort(reverse=True)
    print(
        f"mined {len(found)} negatives, kept {keep}, logit >= {found[keep - 1][0]:.2f}",
        flush=True,
    )
    return np.array([f[1:] for f in found[:keep]], dtype=np.int64)


def augment_crops(
    x: torch.Tensor, g: torch.Generator, *maps: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """Flips and transposition (any of the 8; ``maps`` follow), contrast, brightness, noise."""
    n = x.shape[0]
    out = [x, *maps]
    for dim in (-1, -2):
        flip = (torch.rand(n, generator=g) < 0.5)[:, None, None, None]
        out = [torch.where(flip, t.flip(dim), t) for t in out]
    tr = (torch.rand(n, generator=g) < 0.5)[:, None, None, None]
    out = [torch.where(tr, t.transpose(-1, -2), t) for t in out]
    x = out[0]
    scale = 1.0 + 0.1 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    shift = 0.05 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5)
    noise = torch.randn(x.shape, generator=g) * (0.03 * torch.rand(n, 1, 1, 1, generator=g))
    return (x * scale + shift + noise, *out[1:])


def train_cnn(
    data: CnnData,
    steps: int,
    seed: int,
    crop: int,
    bs: int = 32,
    hard_keep: int = 2000,
    dense: float = 1.0,
) -> NoduleCNN:
    """BCE on the crop's maximum logit plus ``dense`` x a class-balanced BCE on each cell of
    the logit map (cells on a nodule positive, cells of nodule-free areas negative); from
    40% of the steps on, a quarter of each batch are crops around false positives mined on
    whole nodule-free slices (mined again at 70%)."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = NoduleCNN()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    mine_at = {int(steps * 0.4), int(steps * 0.7)} if hard_keep else set()
    hard: np.ndarray | None = None
    t0 = time.time()
    for step in range(steps):
        if step in mine_at:
            hard = mine_hard_negatives(net, data, hard_keep)
        xb, yb, tb, wb = sample_crops(data, bs, crop, rng, hard)
        # one augmentation of crops, targets and weights together
        xt, tt, wt = augment_crops(
            torch.from_numpy(xb), g, torch.from_numpy(tb), torch.from_numpy(wb)
        )
        logits = net.logit_map(xt)
        loss = F.binary_cross_entropy_with_logits(logits.amax(dim=(2, 3)), torch.from_numpy(yb))
        if dense:
            cell = F.binary_cross_entropy_with_logits(logits, tt, reduction="none")
            pos = wt * tt
            neg = wt * (1 - tt)
            loss = loss + dense * (
                (cell * pos).sum() / pos.sum().clamp(min=1) + (cell * neg).sum() / neg.sum()
            )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            print(f"cnn step {step} loss {loss.item():.4f} {time.time() - t0:.0f}s", flush=True)
    return net.eval()


def export(model: nn.Module, out: Path, output_name: str, shape: tuple[int, ...]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(2, *shape)
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
    ap.add_argument("--cnn-steps", type=int, default=2000)
    ap.add_argument("--cnn-small-phantoms", type=int, default=120)
    ap.add_argument("--cnn-crop", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "triton_models")
    ap.add_argument("--only", choices=["unet", "cnn"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    if args.only in (None, "unet"):
        data = make_dataset(range(TRAIN_SEED0, TRAIN_SEED0 + args.train_phantoms), args.slices)
        print(
            f"dataset {data[0].shape} nodule slices {int(data[2].sum())} ({time.time() - t0:.0f}s)",
            flush=True,
        )
        unet = train_unet(data, args.unet_steps, args.seed)
        export(
            Softmax(unet),
            args.out / "lung_nodule_unet" / "1" / "model.onnx",
            "probabilities",
            (1, MODEL_SIZE, MODEL_SIZE),
        )
        del data
    if args.only in (None, "cnn"):
        t = time.time()
        cnn_data = make_cnn_dataset(
            cnn_training_phantoms(args.train_phantoms, args.cnn_small_phantoms), args.slices
        )
        small = sum(d < 5.0 for d in cnn_data.nodule_diameter_mm)
        print(
            f"cnn dataset {cnn_data.x.shape}, {len(cnn_data.nodule_slices)} nodules "
            f"({small} < 5 mm), {int(cnn_data.negative.sum())} slices without nodule "
            f"({time.time() - t:.0f}s)",
            flush=True,
        )
        cnn = train_cnn(cnn_data, args.cnn_steps, args.seed + 1, args.cnn_crop)
        del cnn_data
        export(
            Sigmoid(cnn),
            args.out / "nodule_cnn" / "1" / "model.onnx",
            "probability",
            (CNN_CHANNELS, CNN_SIZE, CNN_SIZE),
        )
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
