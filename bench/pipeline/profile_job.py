"""Profile one job of a 100-slice 512x512 CT in process: the real gateway (`serve` in a
thread, SQLite), the series sent by a pynetdicom SCU, then `JobRunner.run` with the
onnxruntime runner (no Triton: the work around inference is what is measured) and no
destination (delivery is measured by bench_pipeline.py). Prints the job's stage seconds
(median of the runs) and cProfile's top functions of the last run.

    .venv/bin/python bench/pipeline/profile_job.py [--runs 3] [--prefetch] [--top 30]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import pydicom  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from gateway import migrate  # noqa: E402
from gateway.audit import utcnow  # noqa: E402
from gateway.database import make_engine  # noqa: E402
from gateway.models import Job, JobState, Study  # noqa: E402
from gateway.phantom import make_phantom, write_ct_series  # noqa: E402
from gateway.service import serve  # noqa: E402
from gateway.settings import GatewaySettings  # noqa: E402
from tests.conftest import make_settings  # noqa: E402
from tests.scu import send_files  # noqa: E402
from workers.jobs.runner import JobRunner  # noqa: E402


def new_job(engine: Any, study_uid: str, series_uid: str, generation: int) -> int:
    now = utcnow()
    with engine.begin() as connection:
        study_id = connection.execute(
            select(Study.id).where(Study.study_instance_uid == study_uid)
        ).scalar_one()
        return int(
            connection.execute(
                insert(Job)
                .values(
                    study_id=study_id,
                    study_instance_uid=study_uid,
                    generation=generation,
                    rule_name="profile",
                    pipeline="lung_nodules",
                    model_key="m",
                    series_instance_uid=series_uid,
                    destinations=[],
                    priority="routine",
                    state=JobState.QUEUED,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                )
                .returning(Job.id)
            ).scalar_one()
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--prefetch", action="store_true", help="prefetch on (if available)")
    parser.add_argument("--save", type=Path, help="write the cProfile statistics here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="profile-job-"))
    overrides: dict[str, Any] = {
        "inference": {"runner": "onnxruntime"},
        # the prefetcher works for the pipelines of enabled rules; this one never matches, so
        # the router queues nothing (the jobs are made and run here)
        "routing": {
            "rules": [{"name": "profile", "conditions": [{"attribute": "modality", "value": "XX"}]}]
        },
    }
    if "prefetch" in GatewaySettings.model_fields:  # absent before the prefetcher
        overrides["prefetch"] = {"enabled": args.prefetch}
    settings = make_settings(tmp / "data", f"sqlite:///{tmp / 'gateway.db'}", **overrides)
    engine = make_engine(settings)
    migrate.upgrade(settings, engine=engine)
    stop, ready, ports = threading.Event(), threading.Event(), []
    threading.Thread(
        target=serve,
        args=(settings,),
        kwargs={"stop": stop, "on_ready": lambda p: (ports.extend(p), ready.set())},
        daemon=True,
    ).start()
    assert ready.wait(30)
    prefetcher = None
    if args.prefetch:
        from workers.prefetch.process import start_prefetcher

        prefetcher = start_prefetcher(settings)
    runner = JobRunner(settings, engine)
    stages: list[dict[str, float]] = []
    prof = cProfile.Profile()
    for run in range(args.runs + 1):  # the first run warms up (model sessions, imports)
        # a new study each run: the prefetch cache of a series goes with its results
        paths = write_ct_series(make_phantom(7 + run, shape=(100, 512, 512)), tmp / f"ct{run}")
        first = pydicom.dcmread(paths[0], stop_before_pixels=True)
        assert send_files(ports[0], paths) == [0] * len(paths)
        if prefetcher is not None:
            prefetcher.wait_caught_up(engine, 120)
        job_id = new_job(engine, str(first.StudyInstanceUID), str(first.SeriesInstanceUID), 1)
        started = time.perf_counter()
        if run == args.runs:
            prof.enable()
        outcome = runner.run(job_id)
        if run == args.runs:
            prof.disable()
        elapsed = time.perf_counter() - started
        assert outcome.state == JobState.DELIVERED, outcome
        with engine.connect() as connection:
            row = connection.execute(select(Job.stage_seconds).where(Job.id == job_id)).one()
        if run:
            stages.append({**row.stage_seconds, "job_total": elapsed})
            print(json.dumps({k: round(v, 3) for k, v in stages[-1].items()}), flush=True)
    runner.close()
    if prefetcher is not None:
        prefetcher.stop()
    stop.set()
    keys = [k for k in stages[0] if k != "queue_wait"]
    median = {k: round(statistics.median(s.get(k, 0.0) for s in stages), 3) for k in keys}
    print("median", json.dumps(median))
    print("min", json.dumps({k: round(min(s.get(k, 0.0) for s in stages), 3) for k in keys}))
    if args.save is not None:
        prof.dump_stats(args.save)
    pstats.Stats(prof).sort_stats("cumulative").print_stats(args.top)
    pstats.Stats(prof).sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
