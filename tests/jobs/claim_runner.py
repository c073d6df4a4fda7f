"""A job runner in its own process, for tests/jobs/test_claim.py: settings from the
environment (as every gateway process), ready before the start signal so that several such
processes run the same job at the same moment.

    python -m tests.jobs.claim_runner JOB_ID GO_FILE NAME [--hold MARKER]

waits for GO_FILE, runs the job once and prints its outcome as JSON. With --hold it touches
MARKER where the first model would be loaded (after job.started, before inference) and
waits there to be killed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from gateway.database import make_engine
from gateway.pipelines.registry import Pipeline
from gateway.settings import GatewaySettings, load_settings
from workers.jobs.analysers import Analyser, make_analyser
from workers.jobs.runner import JobRunner


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("job_id", type=int)
    parser.add_argument("go", type=Path)
    parser.add_argument("name")
    parser.add_argument("--hold", type=Path)
    args = parser.parse_args()
    settings = load_settings(None)
    engine = make_engine(settings)
    hold: Path | None = args.hold

    def factory(settings: GatewaySettings, pipeline: Pipeline) -> Analyser:
        if hold is not None:
            hold.touch()
            time.sleep(600)  # until SIGKILL
        return make_analyser(settings, pipeline)

    runner = JobRunner(settings, engine, analyser_factory=factory)
    with engine.connect():  # a pooled connection ready before the start
        pass
    print("ready", flush=True)
    while not args.go.exists():
        time.sleep(0.001)
    try:
        outcome = runner.run(args.job_id, worker=args.name, task_id=f"task-{args.name}")
    finally:
        runner.close()
        engine.dispose()
    print(json.dumps({"state": outcome.state.value, "message": outcome.message}), flush=True)


if __name__ == "__main__":
    main()
