"""What the prefetcher costs the listener: bench/ingest/bench_ingest.py's storescu sends to
the gateway (`serve`, SQLite, a snapshot of the code) with `prefetch.enabled` off and on, in
the same run, alternating. Both gateways have one routing rule that names the lung nodule
pipeline and matches nothing, so that the prefetcher decodes and grids every CT instance
(and no job is made). Also: how long after the last instance the cache held the whole series.

    .venv/bin/python bench/pipeline/bench_prefetch_ingest.py [--runs 3] [--slices 200]

Results: bench/results/pipeline_prefetch_ingest.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "bench" / "ingest"))

import bench_ingest as ingest  # noqa: E402
from make_ct_study import make_study  # noqa: E402

RULES = {
    "rules": [
        {
            "name": "prefetch-only",
            "conditions": [{"attribute": "modality", "value": "NONE"}],
            "pipeline": "lung_nodules",
        }
    ]
}


class PrefetchGateway(ingest.GatewayReceiver):
    def __init__(self, workdir: Path, template: Path, code: Path, *, prefetch: bool) -> None:
        super().__init__(workdir, template, code)
        self.prefetch = prefetch
        self.cached_after_s: float | None = None

    def environment(self) -> dict[str, str]:
        env = super().environment()
        env["PACS_GATEWAY_PREFETCH"] = json.dumps({"enabled": self.prefetch})
        env["PACS_GATEWAY_ROUTING"] = json.dumps(RULES)
        return env

    def ready(self) -> bool:
        """Listening, and the prefetcher up (its imports would otherwise be counted)."""
        if not super().ready():
            return False
        return not self.prefetch or "prefetcher running" in self.log_path.read_text()

    def stored_count(self) -> int:
        # called right after the send: time until the cache holds every instance
        stored = super().stored_count()
        if self.prefetch:
            started = time.monotonic()
            while time.monotonic() - started < 120:
                cached = sum(1 for _ in (self.data_dir / "prefetch").rglob("*.slice"))
                if cached >= stored:
                    self.cached_after_s = time.monotonic() - started
                    break
                time.sleep(0.02)
        return stored


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--studies", nargs="*", default=["ct", "small"])
    args = parser.parse_args()
    info = ingest.machine_info()
    info["loadavg_start"] = os.getloadavg()
    rows: list[dict[str, object]] = []
    with ingest.work_directory(None, False) as work:
        studies = {
            "ct": make_study(work / "study-ct", args.slices, 512, seed=1),
            "small": make_study(work / "study-small", args.slices, 64, seed=2),
        }
        code, info["gateway_code"] = ingest.snapshot_gateway(work, "worktree")
        # `serve` starts the prefetcher from workers/: snapshot it too
        shutil.copytree(
            REPO / "workers", code / "workers", ignore=shutil.ignore_patterns("__pycache__")
        )
        template = ingest.migrate_template(work, code)
        for run in range(1, args.runs + 1):
            for study in args.studies:
                for prefetch in (False, True) if run % 2 else (True, False):
                    workdir = work / f"r{run}-{study}-{int(prefetch)}"
                    receiver = PrefetchGateway(workdir, template, code, prefetch=prefetch)
                    m = ingest.measure(
                        receiver,
                        studies[study],
                        scenario="c1",
                        study=study,
                        run=run,
                        sender_nodelay=True,
                        receiver_nodelay=True,
                        options={"prefetch": prefetch},
                        timeout_s=600,
                    )
                    row = {**asdict(m), "instances_per_s": m.instances_per_s}
                    row["prefetch"] = prefetch
                    row["cached_after_last_s"] = receiver.cached_after_s
                    rows.append(row)
                    if receiver.cached_after_s is not None:
                        print(f"    cache complete {receiver.cached_after_s:.2f} s after the send")
                    shutil.rmtree(workdir, ignore_errors=True)
    info["loadavg_end"] = os.getloadavg()
    write(info, rows, args)


def write(info: dict[str, object], rows: list[dict[str, object]], args: argparse.Namespace) -> None:
    out = REPO / "bench" / "results"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")

    def med(study: str, prefetch: bool, key: str) -> float:
        values = [
            float(r[key])  # type: ignore[arg-type]
            for r in rows
            if r["study"] == study and r["prefetch"] == prefetch and r[key] is not None
        ]
        return statistics.median(values) if values else float("nan")

    lines = [
        "# Prefetch: its cost to ingest",
        "",
        f"`bench/pipeline/bench_prefetch_ingest.py`, {when}, {os.cpu_count()} CPUs, load "
        f"average {info['loadavg_start'][0]:.2f} at the start, {info['loadavg_end'][0]:.2f} at "  # type: ignore[index]
        f"the end. storescu (TCP_NODELAY) sends {args.slices} instances to the gateway "
        "(`serve`, SQLite, fsync on) with the prefetcher off and on, alternating, median of "
        f"{args.runs} runs. The prefetcher decodes each CT instance and makes its two model-grid "
        "slices (lung nodule pipeline) in its own process, idle scheduling class; while "
        "instances arrive faster than prefetch.defer_above_per_s (50/s) it waits for the "
        "burst to end, so its work comes after a send at full speed.",
        "",
        "| study | prefetch off (inst/s) | prefetch on (inst/s) | change "
        "| gateway CPU off / on (s) | cache complete after the last instance (s) |",
        "|---|---|---|---|---|---|",
    ]
    for study in args.studies:
        off, on = med(study, False, "instances_per_s"), med(study, True, "instances_per_s")
        lines.append(
            f"| {study} | {off:.0f} | {on:.0f} | {100 * (on - off) / off:+.1f} % "
            f"| {med(study, False, 'receiver_cpu_s'):.1f} / "
            f"{med(study, True, 'receiver_cpu_s'):.1f} "
            f"| {med(study, True, 'cached_after_last_s'):.2f} |"
        )
    lines += [
        "",
        "Gateway CPU counts every process of `serve`, the prefetcher's included, during the "
        "send only. Target: ingest slowed by no more than 5 %.",
        "",
    ]
    (out / "pipeline_prefetch_ingest.md").write_text("\n".join(lines))
    (out / "pipeline_prefetch_ingest.json").write_text(
        json.dumps({"when": when, "machine": info, "runs": rows}, indent=2, default=str)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
