"""End-to-end latency and throughput of the pipeline with real parts.

One 100-slice 512x512 phantom study is sent by DCMTK storescu to the gateway (`serve`, SQLite)
with a Celery worker (Redis broker, its own redis-server), the bundled Triton on CPU and
Orthanc as the PACS. Latency runs from the last instance acknowledged to the SEG and SR
stored in Orthanc; the quiet period is reported separately, and the job row gives the
stage breakdown. Throughput: N studies sent at once, with 1 and then 2 worker processes.

    .venv/bin/python bench/pipeline/bench_pipeline.py [--runs 3] [--studies 6]

Results: bench/results/pipeline.md and pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import pydicom  # noqa: E402
from sqlalchemy import select  # noqa: E402

from gateway import migrate  # noqa: E402
from gateway.database import make_engine  # noqa: E402
from gateway.models import Job, Study  # noqa: E402
from gateway.phantom import make_phantom, write_ct_series  # noqa: E402
from gateway.settings import GatewaySettings, load_settings  # noqa: E402
from tests.conftest import free_port, settings_environment, wait_for_port  # noqa: E402
from tests.integration.orthanc import ORTHANC_AE, Orthanc  # noqa: E402
from tests.pipeline.harness import RedisServer, results_in_pacs  # noqa: E402
from workers.triton_server import TritonServer  # noqa: E402

QUIET_PERIOD_S = 2.0
STAGES = ("load_preprocess", "inference", "postprocess", "results_build", "delivery")


def settings_for(
    tmp: Path, redis_url: str, triton: TritonServer, pacs: Orthanc, workers: int
) -> GatewaySettings:
    return load_settings(
        None,
        data_dir=tmp / f"data-{workers}",
        dicom={
            "ae_title": "PACSGATEWAY",
            "host": "127.0.0.1",
            "port": free_port(),
            "allowed_peers": [{"ae_title": "*", "host": "127.0.0.1"}],
        },
        storage={"min_free_mb": 0},
        assembly={"quiet_period_s": QUIET_PERIOD_S, "poll_interval_s": 0.2},
        queue={
            "broker_url": redis_url,
            "worker_concurrency": workers,
            "router_poll_interval_s": 0.2,
        },
        inference={"triton_grpc_url": triton.grpc_url},
        delivery={"poll_interval_s": 0.5},
        destinations=[
            {
                "kind": "dicom",
                "name": "orthanc",
                "ae_title": ORTHANC_AE,
                "host": "127.0.0.1",
                "port": pacs.dicom_port,
            }
        ],
        routing={
            "rules": [
                {"name": "chest-ct", "conditions": [{"attribute": "modality", "value": "CT"}]}
            ]
        },
    )


def start(command: str, settings: GatewaySettings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", command],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=settings_environment(settings),
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def storescu(port: int, paths: list[Path]) -> None:
    env = {**os.environ, "TCP_NODELAY": "1"}
    subprocess.run(
        [
            "storescu",
            "-aet",
            "CT_SCANNER",
            "-aec",
            "PACSGATEWAY",
            "127.0.0.1",
            str(port),
            *map(str, paths),
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=600,
    )


def wait_results(pacs: Orthanc, study_uids: list[str], timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    pending = set(study_uids)
    while pending:
        for uid in list(pending):
            found = results_in_pacs(pacs, uid)
            if found.get("SEG") and found.get("SR"):
                pending.discard(uid)
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"expected results of {len(study_uids)} studies, {len(pending)} missing"
            )
        time.sleep(0.05)
    return time.monotonic()


def study(tmp: Path, seed: int, shape: tuple[int, int, int]) -> tuple[str, list[Path]]:
    phantom = make_phantom(
        seed, shape=shape, spacing=(2.5, 0.7, 0.7), n_nodules=2, nodule_diameter_mm=(8.0, 20.0)
    )
    paths = write_ct_series(phantom, tmp / f"study-{seed}")
    return str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID), paths


def job_breakdown(settings: GatewaySettings, study_uid: str) -> dict[str, float]:
    engine = make_engine(settings)
    with engine.connect() as connection:
        s = connection.execute(select(Study).where(Study.study_instance_uid == study_uid)).one()
        j = connection.execute(select(Job).where(Job.study_instance_uid == study_uid)).one()
    engine.dispose()

    def secs(a: datetime | None, b: datetime | None) -> float:
        assert a is not None and b is not None
        return (b - a).total_seconds()

    out = {
        "quiet_period": secs(s.last_received_at, s.completed_at),
        "routing": secs(s.completed_at, j.enqueued_at),
        "queue_wait": secs(j.enqueued_at, j.started_at),
    }
    out.update({k: float(j.stage_seconds.get(k, 0.0)) for k in STAGES})
    return out


def latency_runs(
    tmp: Path, redis: RedisServer, triton: TritonServer, pacs: Orthanc, runs: int
) -> list[dict[str, float]]:
    settings = settings_for(tmp, redis.url, triton, pacs, 1)
    migrate.upgrade(settings)
    gateway = start("serve", settings, tmp / "gateway-latency.log")
    worker = start("worker", settings, tmp / "worker-latency.log")
    wait_for_port(settings.dicom.port)
    results = []
    try:
        # warm-up: first model calls and imports
        uid, paths = study(tmp, 8000, (100, 512, 512))
        storescu(settings.dicom.port, paths)
        wait_results(pacs, [uid], 300)
        for run in range(runs):
            uid, paths = study(tmp, 8001 + run, (100, 512, 512))
            storescu(settings.dicom.port, paths)
            acked = time.monotonic()
            done = wait_results(pacs, [uid], 300)
            row = job_breakdown(settings, uid)
            row["total"] = done - acked
            row["excluding_quiet_period"] = row["total"] - row["quiet_period"]
            overhead = row["excluding_quiet_period"] - row["inference"]
            row["overhead_share"] = overhead / row["total"]
            row["overhead_share_excluding_quiet"] = overhead / row["excluding_quiet_period"]
            results.append(row)
            print(
                f"latency run {run + 1}: {json.dumps({k: round(v, 3) for k, v in row.items()})}",
                flush=True,
            )
    finally:
        stop(worker)
        stop(gateway)
    return results


def throughput(
    tmp: Path, redis: RedisServer, triton: TritonServer, pacs: Orthanc, workers: int, count: int
) -> float:
    settings = settings_for(tmp, redis.url, triton, pacs, workers)
    migrate.upgrade(settings)
    gateway = start("serve", settings, tmp / f"gateway-{workers}.log")
    worker = start("worker", settings, tmp / f"worker-{workers}.log")
    wait_for_port(settings.dicom.port)
    try:
        studies = [study(tmp, 9000 + 100 * workers + i, (100, 512, 512)) for i in range(count)]
        started = time.monotonic()
        for _uid, paths in studies:
            storescu(settings.dicom.port, paths)
        done = wait_results(pacs, [uid for uid, _ in studies], 900)
    finally:
        stop(worker)
        stop(gateway)
    per_hour = count / (done - started) * 3600
    print(f"throughput, {workers} worker process(es): {per_hour:.0f} studies/h", flush=True)
    return per_hour


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--studies", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as name:
        tmp = Path(name)
        redis = RedisServer(tmp, free_port())
        redis.start()
        (tmp / "pacs").mkdir()
        pacs = Orthanc(tmp / "pacs", free_port(), {}, dicom_port=free_port())
        pacs.start()
        triton = TritonServer(
            REPO / "triton_models",
            http_port=free_port(),
            grpc_port=free_port(),
            metrics_port=free_port(),
            log_path=tmp / "triton.log",
        ).start()
        try:
            latency = latency_runs(tmp, redis, triton, pacs, args.runs)
            rates = {w: throughput(tmp, redis, triton, pacs, w, args.studies) for w in (1, 2)}
        finally:
            triton.stop()
            pacs.stop()
            redis.stop()
    medians = {k: statistics.median(r[k] for r in latency) for k in latency[0]}
    write_results(medians, latency, rates, args)


def write_results(
    medians: dict[str, float],
    runs: list[dict[str, float]],
    rates: dict[int, float],
    args: argparse.Namespace,
) -> None:
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    (out / "pipeline.json").write_text(
        json.dumps(
            {
                "when": when,
                "machine": machine,
                "median": medians,
                "runs": runs,
                "studies_per_hour": rates,
            },
            indent=2,
        )
    )
    rows = [
        ("quiet period (assembly)", "quiet_period"),
        ("routing (complete to queued)", "routing"),
        ("queue wait", "queue_wait"),
        ("load and preprocess", "load_preprocess"),
        ("inference (Triton)", "inference"),
        ("postprocess", "postprocess"),
        ("SEG and SR build", "results_build"),
        ("delivery (C-STORE to Orthanc)", "delivery"),
    ]
    lines = [
        "# Pipeline benchmark",
        "",
        f"`bench/pipeline/bench_pipeline.py`, {when}, {machine}. One 100-slice 512x512 phantom",
        "study sent by storescu; gateway (SQLite), one Celery worker (Redis), bundled Triton on",
        f"CPU, Orthanc as the PACS; quiet period {QUIET_PERIOD_S:g} s. "
        f"Median of {args.runs} runs after a warm-up.",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [f"| {label} | {medians[key]:.2f} |" for label, key in rows]
    lines += [
        f"| **last instance acknowledged to SEG and SR in Orthanc** | **{medians['total']:.2f}** |",
        f"| same, without the quiet period | {medians['excluding_quiet_period']:.2f} |",
        "",
        "Everything but inference and the quiet period: "
        f"**{100 * medians['overhead_share']:.1f} %** of the total, "
        f"{100 * medians['overhead_share_excluding_quiet']:.1f} % of the total without the "
        "quiet period (target: under 20 %).",
        "",
        f"Throughput, {args.studies} studies sent back to back: 1 worker process "
        f"**{rates[1]:.0f} studies/h**, 2 worker processes **{rates[2]:.0f} studies/h** "
        f"({rates[2] / rates[1]:.2f}x; Triton, the gateway and the workers share the same CPUs).",
        "",
    ]
    (out / "pipeline.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
