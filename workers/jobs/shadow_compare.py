"""After a job's inference: if it is half of a shadow pair whose other half has inferred too,
compare the two runs and keep the comparison. Whichever of the two finishes last finds the
other committed, so each pair is compared (both may, if they finish together: the later
replaces the earlier, same numbers)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from sqlalchemy import Engine, select

from gateway.audit import utcnow
from gateway.models import Job
from gateway.monitoring.outcome import study_outcome
from gateway.pipelines.registry import PipelineRegistry
from gateway.shadow.compare import compare_runs
from gateway.shadow.record import ShadowPair, pairs_ready, save_comparison
from workers.jobs.findings_store import load_findings


def compare_ready_pairs(
    engine: Engine,
    registry: PipelineRegistry,
    jobs_dir: Path,
    job_id: int,
    writers: AbstractContextManager[object],
) -> list[ShadowPair]:
    """Compare every ready pair the job belongs to; returns the pairs compared."""
    with engine.connect() as connection:
        pairs = pairs_ready(connection, job_id)
    for pair in pairs:
        with engine.connect() as connection:
            rows = {
                row.id: row
                for row in connection.execute(
                    select(Job.id, Job.pipeline, Job.summary).where(
                        Job.id.in_([pair.primary_job_id, pair.shadow_job_id])
                    )
                )
            }
        runs = []
        for run_id in (pair.primary_job_id, pair.shadow_job_id):
            row = rows[run_id]
            description = (
                registry.get(row.pipeline).description if row.pipeline in registry else None
            )
            outcome = study_outcome(row.summary, description)
            if outcome is None:
                raise ValueError(f"expected findings in the summary of job {run_id}, found none")
            runs.append((load_findings(jobs_dir / str(run_id) / "findings.npz"), outcome))
        (primary, primary_outcome), (shadow, shadow_outcome) = runs
        comparison = compare_runs(primary, shadow, primary_outcome, shadow_outcome)
        with writers, engine.begin() as connection:
            save_comparison(connection, pair, comparison, utcnow())
    return pairs
