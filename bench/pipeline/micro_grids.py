"""Seconds to put a 100-slice 512x512 CT on both models' grids (`to_grid` with the
lung_nodules pipeline's U-Net and CNN preprocessing): `resample_slices` as it is (about
1 MiB of source per step) against the whole-volume formula it replaced (the reference in
tests/inference/test_resample.py). Both alternated in the same process, so that a
neighbour's load hits both alike; the values are checked equal bit for bit each round.

    .venv/bin/python bench/pipeline/micro_grids.py [--rounds 5]

Results: bench/results/micro_grids.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from gateway.pipelines.description import Preprocess  # noqa: E402
from gateway.pipelines.lung_nodules import pipeline  # noqa: E402
from tests.inference.test_resample import whole_volume  # noqa: E402
from workers.inference import declared  # noqa: E402
from workers.inference.preprocess import resample_slices  # noqa: E402

PIXEL_SPACING = (0.7, 0.7)


def grids(volume: NDArray[np.float32], presets: list[Preprocess]) -> list[NDArray[np.float32]]:
    return [declared.to_grid(volume, PIXEL_SPACING, p) for p in presets]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    presets = [m.preprocess for m in pipeline().description.models]
    rng = np.random.default_rng(0)
    volume = (rng.random((100, 512, 512), dtype=np.float32) * 2000 - 1000).astype(np.float32)
    times: dict[str, list[float]] = {"whole volume (before)": [], "steps (now)": []}
    for _ in range(args.rounds):
        declared.resample_slices = whole_volume  # type: ignore[assignment]
        started = time.perf_counter()
        before = grids(volume, presets)
        times["whole volume (before)"].append(time.perf_counter() - started)
        declared.resample_slices = resample_slices
        started = time.perf_counter()
        now = grids(volume, presets)
        times["steps (now)"].append(time.perf_counter() - started)
        if not all(np.array_equal(a, b) for a, b in zip(before, now, strict=True)):
            raise SystemExit("the grids differ: the steps changed the values")
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Model grids of a 100-slice 512x512 CT",
        "",
        f"`bench/pipeline/micro_grids.py --rounds {args.rounds}`, {when}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average (1 min) {os.getloadavg()[0]:.2f}. Both grids of "
        "the lung_nodules pipeline (U-Net 160x160 at 2.4 mm, CNN 320x320 at 1.2 mm), the two "
        "ways alternated; the grids were equal bit for bit in every round.",
        "",
        "| resample_slices | median (s) | min (s) |",
        "|---|---|---|",
    ]
    lines += [
        f"| {name} | {statistics.median(t):.3f} | {min(t):.3f} |" for name, t in times.items()
    ]
    ratio = statistics.median(times["whole volume (before)"]) / statistics.median(
        times["steps (now)"]
    )
    lines += ["", f"Ratio of the medians: {ratio:.2f}x."]
    out = REPO / "bench" / "results" / "micro_grids.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
