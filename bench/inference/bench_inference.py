"""Benchmark: one 100-slice 512x512 CT phantom through Triton vs in-process onnxruntime.

    bash triton_models/setup_triton_env.sh
    .venv/bin/python bench/inference/bench_inference.py [--runs 3] [--slices 100]

Both runners use the same models, preprocessing and postprocessing, on the same machine;
Triton's Python backend and the in-process runner both give onnxruntime 2 intra-op threads.
Writes bench/results/inference.md (median of --runs runs after one warm-up run).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from gateway.inference_config import InferenceSettings  # noqa: E402
from gateway.phantom import make_phantom, write_ct_series  # noqa: E402
from workers.inference import InferenceClient  # noqa: E402
from workers.triton_server import TritonServer, free_port  # noqa: E402

REPOSITORY = ROOT / "triton_models"


def time_runs(
    settings: InferenceSettings, paths: list[Path], runs: int
) -> tuple[list[float], float]:
    """Seconds per study for each run, and the median seconds spent in the model calls."""
    with InferenceClient(settings) as client:
        client.analyse_files(paths)  # warm-up: sessions, connections
        times = []
        model_s = []
        for _ in range(runs):
            t = time.perf_counter()
            f = client.analyse_files(paths)
            times.append(time.perf_counter() - t)
            model_s.append(f.timings_s["segmentation"] + f.timings_s["classification"])
    return times, statistics.median(model_s)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--slices", type=int, default=100)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "inference.md")
    args = ap.parse_args()
    phantom = make_phantom(
        424242, shape=(args.slices, 512, 512), spacing=(2.5, 0.7, 0.7), n_nodules=3
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_ct_series(phantom, Path(tmp) / "series")
        onnx = InferenceSettings(runner="onnxruntime", model_repository=REPOSITORY, onnx_threads=2)
        server = TritonServer(
            REPOSITORY,
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            log_path=Path(tmp) / "triton.log",
        )
        with server:
            triton = InferenceSettings(
                runner="triton", triton_grpc_url=server.grpc_url, model_repository=REPOSITORY
            )
            t_triton, m_triton = time_runs(triton, paths, args.runs)
        t_onnx, m_onnx = time_runs(onnx, paths, args.runs)
    med_t = statistics.median(t_triton)
    med_o = statistics.median(t_onnx)
    n = args.slices
    rows = [
        ("Triton (gRPC, Python backend + onnxruntime)", med_t, t_triton, m_triton),
        ("in-process onnxruntime", med_o, t_onnx, m_onnx),
    ]
    lines = [
        "# Inference benchmark",
        "",
        f"One {n}-slice 512x512 CT phantom (files on disk, explicit VR little endian) through "
        "read + preprocess + U-Net + CNN + postprocess; median of "
        f"{args.runs} runs after a warm-up run. Command: "
        "`.venv/bin/python bench/inference/bench_inference.py`.",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores "
        "(shared with other work while measured), CPU only.",
        "",
        "| runner | s / study (median) | slices / s | runs (s) | of which model calls (s) |",
        "|---|---|---|---|---|",
    ]
    for name, med, all_t, model in rows:
        runs_text = ", ".join(f"{v:.2f}" for v in all_t)
        lines.append(f"| {name} | {med:.2f} | {n / med:.1f} | {runs_text} | {model:.2f} |")
    overhead = (med_t / med_o - 1.0) * 100
    lines += [
        "",
        f"Triton / in-process ratio: **{med_t / med_o:.3f}** (overhead {overhead:+.1f}%, "
        "target <= 15%).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
