"""One job through its stages: infer, build results, deliver. Each stage records its end in
the job row with an audit event; a rerun (retry, redelivery after a lost worker) skips the
stages already done, and derived UIDs make rebuilt objects the same objects."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from celery.exceptions import SoftTimeLimitExceeded
from pydicom.dataset import Dataset
from sqlalchemy import Connection, Engine, select, update

from gateway.audit import AuditKind, Outcome, audit_row, record, utcnow
from gateway.database import writer_queue
from gateway.delivery.deliverer import Deliverer
from gateway.dicom.spool import SpoolFull
from gateway.jobs.claim import (
    ClaimResult,
    LeaseKeeper,
    claim_job,
    holder_name,
    release_lease,
)
from gateway.models import (
    TERMINAL_JOB_STATES,
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Series,
)
from gateway.pipelines.findings import PipelineFindings
from gateway.pipelines.registry import Pipeline
from gateway.results.build import build_results
from gateway.results.declared import ConvertibleFindings
from gateway.results.identity import ResultUIDs
from gateway.results.publish import forms_needed, record_and_queue, write_results
from gateway.results.source import UnsupportedSeries, read_source_series
from gateway.results.stored import StoredResult
from gateway.settings import GatewaySettings
from workers.inference.declared import check_accepted
from workers.inference.errors import PermanentInferenceError, TransientInferenceError
from workers.inference.series import SeriesFile, Volume, load_series
from workers.jobs.analysers import Analyser, make_analyser
from workers.jobs.findings_store import generic, load_findings, save_findings, summarise
from workers.jobs.shadow_compare import compare_ready_pairs
from workers.prefetch.cache import SeriesCache, sweep

LOGGER = logging.getLogger(__name__)
# How long a job waits for its deliveries that another deliverer (the gateway's delivery
# loop) claimed just before it: they are answered in moments, and the claim's lease (minutes)
# would otherwise set the job's retry, leaving it "results built" long after the PACS has
# its results.
IN_FLIGHT_WAIT_S = 10.0


@runtime_checkable
class VolumeAnalyser(Protocol):
    """An analyser that takes a volume read by the runner (with the prefetch cache)."""

    def analyse_volume(self, volume: Volume) -> PipelineFindings | ConvertibleFindings: ...


class PermanentJobError(Exception):
    """Retrying cannot help; the job goes to the dead-letter state `failed`."""


class TransientJobError(Exception):
    """A later attempt may succeed (Triton down, disk full, destination unreachable)."""


@dataclass(frozen=True)
class JobOutcome:
    state: JobState
    retry_in_s: float | None = None
    message: str = ""
    recheck_in_s: float | None = None
    """Another runner holds the job's lease: look again once it expires (its holder may
    have died). A new message, not a retry: waiting on a live runner uses no attempts."""


def _in_flight(rows: list[Any]) -> bool:
    """Some delivery is pending, none has failed an attempt yet, and none is due: another
    deliverer claimed it after this job's own pass (a failed attempt waits its backoff)."""
    pending = [r for r in rows if r.state == DeliveryState.PENDING]
    now = utcnow()
    return (
        bool(pending)
        and not any(r.state == DeliveryState.FAILED for r in rows)
        and all(r.last_error is None and _aware(r.next_attempt_at) > now for r in pending)
    )


def _seconds(later: datetime | None, earlier: datetime | None) -> float | None:
    if later is None or earlier is None:
        return None
    return round((_aware(later) - _aware(earlier)).total_seconds(), 3)


def _aware(value: datetime) -> datetime:
    # SQLite returns naive datetimes; every stored time is UTC.
    return value if value.tzinfo else value.replace(tzinfo=utcnow().tzinfo)


class JobRunner:
    def __init__(
        self,
        settings: GatewaySettings,
        engine: Engine,
        analyser_factory: Callable[[GatewaySettings, Pipeline], Analyser] = make_analyser,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.registry = settings.pipeline_registry()
        self._analyser_factory = analyser_factory
        self._analysers: dict[str, Analyser] = {}
        self._writers = writer_queue(engine)
        # a job's source headers, read with its volume, for its results (then dropped)
        self._headers: dict[int, tuple[Dataset, ...]] = {}

    def pipeline(self, name: str) -> Pipeline:
        try:
            return self.registry.get(name)
        except KeyError as exc:
            raise PermanentJobError(f"unknown_pipeline: {exc.args[0]}") from exc

    def analyser(self, pipeline: Pipeline) -> Analyser:
        """The pipeline's analyser, made on first use (in the worker process, after the
        fork: gRPC channels do not survive one)."""
        if pipeline.name not in self._analysers:
            self._analysers[pipeline.name] = self._analyser_factory(self.settings, pipeline)
        return self._analysers[pipeline.name]

    def close(self) -> None:
        for analyser in self._analysers.values():
            analyser.close()
        self._analysers.clear()

    # --- database helpers -------------------------------------------------------------
    def _job(self, connection: Connection, job_id: int) -> Job:
        job = connection.execute(select(Job).where(Job.id == job_id)).one_or_none()
        if job is None:
            raise PermanentJobError(f"expected job {job_id} in the database, found none")
        return job  # type: ignore[return-value]  # a Row with Job's columns

    def _update(
        self,
        job_id: int,
        kind: AuditKind | None,
        outcome: Outcome = Outcome.SUCCESS,
        detail: dict[str, Any] | None = None,
        stage_seconds: dict[str, float | None] | None = None,
        **values: Any,
    ) -> None:
        now = utcnow()
        with self._writers, self.engine.begin() as connection:
            job = self._job(connection, job_id)
            if stage_seconds:
                merged = dict(job.stage_seconds or {})
                merged.update({k: v for k, v in stage_seconds.items() if v is not None})
                values["stage_seconds"] = merged
            connection.execute(update(Job).where(Job.id == job_id).values(updated_at=now, **values))
            if kind is not None:
                record(
                    connection,
                    audit_row(
                        kind,
                        outcome,
                        actor="worker",
                        study_instance_uid=job.study_instance_uid,
                        detail={"job": job_id, **(detail or {})},
                        occurred_at=now,
                    ),
                )

    # --- the job ----------------------------------------------------------------------
    def run(self, job_id: int, worker: str = "", task_id: str = "") -> JobOutcome:
        """Run the job's stages that are not done yet. Its job.started event records the
        worker (Celery node name: which host ran which attempt) and the task message's ID
        (a retry keeps it; a second message for the job has another). Only the holder of
        the job's lease runs it (gateway/jobs/claim.py): a runner that finds another's live
        lease records job.skipped and does nothing."""
        with self.engine.connect() as connection:
            job = self._job(connection, job_id)
        if job.state in TERMINAL_JOB_STATES:
            return JobOutcome(job.state, message="already finished")
        holder = holder_name(worker, task_id)
        lease_s = self.settings.queue.job_lease_s
        claim = claim_job(self.engine, self._writers, job_id, holder, lease_s)
        if not claim.won:
            return self._skipped(job_id, claim, worker, task_id)
        try:
            with LeaseKeeper(self.engine, self._writers, job_id, holder, lease_s):
                return self._run_claimed(job_id, worker, task_id, claim)
        finally:
            self._release(job_id, holder)

    def _run_claimed(
        self, job_id: int, worker: str, task_id: str, claim: ClaimResult
    ) -> JobOutcome:
        with self.engine.connect() as connection:
            job = self._job(connection, job_id)  # as it is now, under the lease
        now = utcnow()
        first_start = job.started_at is None
        self._update(
            job_id,
            AuditKind.JOB_STARTED,
            detail={
                "attempt": job.attempts + 1,
                "state": job.state.value,
                "worker": worker,
                "task": task_id,
                "holder": claim.holder,
                **({"took_over_from": claim.took_over_from} if claim.took_over_from else {}),
            },
            stage_seconds={"queue_wait": _seconds(now, job.enqueued_at)} if first_start else None,
            attempts=job.attempts + 1,
            started_at=job.started_at or now,
            state=JobState.RUNNING if job.state == JobState.QUEUED else job.state,
        )
        try:
            return self._stages(job_id)
        finally:
            self._headers.pop(job_id, None)

    def _skipped(self, job_id: int, claim: ClaimResult, worker: str, task_id: str) -> JobOutcome:
        """Another runner holds the job (a second message for it), or it ended meanwhile."""
        with self.engine.connect() as connection:
            job = self._job(connection, job_id)
        if job.state in TERMINAL_JOB_STATES:
            return JobOutcome(job.state, message="already finished")
        until = claim.lease_until.isoformat() if claim.lease_until else None
        self._update(
            job_id,
            AuditKind.JOB_SKIPPED,
            detail={
                "reason": "claimed",
                "holder": claim.holder,
                "lease_until": until,
                "worker": worker,
                "task": task_id,
            },
        )
        message = f"expected the job unclaimed, found it held by {claim.holder} until {until}"
        LOGGER.info("job %d skipped: %s", job_id, message)
        left = (_aware(claim.lease_until) - utcnow()).total_seconds() if claim.lease_until else 0
        return JobOutcome(job.state, message=message, recheck_in_s=max(1.0, left + 1.0))

    def _release(self, job_id: int, holder: str) -> None:
        try:
            release_lease(self.engine, self._writers, job_id, holder)
        except Exception as exc:  # the database is down: the lease expires by itself
            LOGGER.warning("job %d: lease not released: %s", job_id, type(exc).__name__)

    def _stages(self, job_id: int) -> JobOutcome:
        try:
            findings = self._inferred(job_id)
            if findings is None:
                return JobOutcome(JobState.CANCELLED, message="cancelled")
            self._compare_shadow(job_id)
            stored = self._results(job_id, findings)
            if stored is None:
                return JobOutcome(JobState.CANCELLED, message="cancelled")
            return self._delivered(job_id, stored)
        except (PermanentJobError, PermanentInferenceError, UnsupportedSeries) as exc:
            raise_time_limit(exc)
            return self.fail(job_id, _describe(exc))
        except (TransientJobError, TransientInferenceError, SpoolFull) as exc:
            raise_time_limit(exc)
            message = _describe(exc)
            self._update(
                job_id,
                AuditKind.JOB_RETRY,
                Outcome.FAILURE,
                detail={"reason": message},
                last_error=message,
            )
            return JobOutcome(JobState.RUNNING, retry_in_s=0.0, message=message)

    def fail(self, job_id: int, message: str) -> JobOutcome:
        """Dead letter: the job stops here with its reason (an operator may retry it)."""
        now = utcnow()
        self._update(
            job_id,
            AuditKind.JOB_FAILED,
            Outcome.FAILURE,
            detail={"reason": message},
            state=JobState.FAILED,
            last_error=message,
            finished_at=now,
        )
        LOGGER.warning("job %d failed: %s", job_id, message)
        return JobOutcome(JobState.FAILED, message=message)

    def _cancelled(self, job_id: int) -> bool:
        with self.engine.connect() as connection:
            return self._job(connection, job_id).state == JobState.CANCELLED

    def _findings_path(self, job_id: int) -> Path:
        return self.settings.jobs_dir / str(job_id) / "findings.npz"

    def _series_files(self, series_instance_uid: str) -> list[SeriesFile]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(Instance.file_path, Instance.sop_instance_uid)
                .join(Series, Instance.series_id == Series.id)
                .where(Series.series_instance_uid == series_instance_uid)
            ).all()
            files = [SeriesFile(self.settings.spool_dir / r[0], r[1]) for r in rows]
        missing = [f for f in files if not f.path.is_file()]
        if not files or missing:
            raise PermanentJobError(
                f"expected {len(files)} spool file(s) of the series, found {len(missing)} missing"
            )
        return files

    def _analyse(
        self, job_id: int, pipeline: Pipeline, files: list[SeriesFile], series_instance_uid: str
    ) -> tuple[PipelineFindings | ConvertibleFindings, int]:
        """The findings, and how many slices came from the prefetch cache. A volume is read
        here, each file once (the cache's slices up to their pixel data only), and its
        headers are kept for the results of this job."""
        analyser = self.analyser(pipeline)
        if pipeline.description.accepts.geometry != "volume" or not isinstance(
            analyser, VolumeAnalyser
        ):
            return analyser.analyse_files([f.path for f in files]), 0
        started = time.perf_counter()
        cache = None
        if self.settings.prefetch.enabled:
            cache = SeriesCache(self.settings.data_dir, series_instance_uid)
        loaded = load_series(files, cache)
        read_s = time.perf_counter() - started
        self._headers[job_id] = loaded.headers
        findings = analyser.analyse_volume(loaded.volume)
        findings.timings_s["read"] = read_s
        findings.timings_s["total"] = time.perf_counter() - started
        return findings, loaded.prefetched

    def _inferred(self, job_id: int) -> PipelineFindings | ConvertibleFindings | None:
        path = self._findings_path(job_id)
        with self.engine.connect() as connection:
            job = self._job(connection, job_id)
        pipeline = self.pipeline(job.pipeline)
        if job.inferred_at is not None and path.is_file():
            return load_findings(path)
        if self._cancelled(job_id):
            return None
        files = self._series_files(job.series_instance_uid)
        # A series the pipeline cannot take (a DX sent to a CT pipeline by a rule, one slice)
        # fails for good with a reason code, before any model is called.
        criteria = pipeline.description.accepts.series_selection().overridden_by(
            self.settings.routing.series_selection
        )
        check_accepted([f.path for f in files], criteria, pipeline.name)
        findings, prefetched = self._analyse(job_id, pipeline, files, job.series_instance_uid)
        save_findings(findings, path)
        t = findings.timings_s
        self._update(
            job_id,
            AuditKind.JOB_INFERRED,
            detail={
                "pipeline": pipeline.name,
                "segments": len(generic(findings).segments),
                "runner": generic(findings).runner,
                "prefetched_slices": prefetched,
            },
            stage_seconds={
                "load_preprocess": round(t.get("read", 0.0) + t.get("preprocess", 0.0), 3),
                "inference": round(
                    t.get("check_models", 0.0)
                    + t.get("segmentation", 0.0)
                    + t.get("classification", 0.0)
                    + t.get("inference", 0.0),
                    3,
                ),
                "postprocess": round(t.get("postprocess", 0.0), 3),
            },
            state=JobState.INFERRED,
            inferred_at=utcnow(),
            summary=summarise(findings),
        )
        return findings

    def _results(
        self, job_id: int, findings: PipelineFindings | ConvertibleFindings
    ) -> list[StoredResult] | None:
        with self.engine.connect() as connection:
            job = self._job(connection, job_id)
            forms = forms_needed(connection, job.destinations)
        if job.results_built_at is not None and job.summary and "results" in job.summary:
            return [StoredResult(**r) for r in job.summary["results"]]
        if self._cancelled(job_id):
            return None
        started = time.perf_counter()
        headers = self._headers.pop(job_id, None)
        if headers is None:  # inferred by an earlier attempt: read the headers only
            headers = tuple(
                read_source_series([f.path for f in self._series_files(job.series_instance_uid)])
            )
        uids = ResultUIDs.for_findings(findings, pipeline=f"{job.pipeline}#{job.generation}")
        objects = build_results(
            headers,
            findings,
            self.settings.results,
            uids,
            self.pipeline(job.pipeline).description,
            forms,
        )
        stored = write_results(self.settings, objects)
        elapsed = round(time.perf_counter() - started, 3)
        now = utcnow()
        with self._writers, self.engine.begin() as connection:
            # A shadow job's results are stored, never queued, whatever its row says.
            record_and_queue(connection, stored, [] if job.shadow_of else job.destinations)
            summary = dict(job.summary or {})
            summary["results"] = [r.__dict__ for r in stored]
            merged = dict(job.stage_seconds or {})
            merged["results_build"] = elapsed
            connection.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    state=JobState.RESULTS_BUILT,
                    results_built_at=now,
                    summary=summary,
                    stage_seconds=merged,
                    updated_at=now,
                )
            )
            record(
                connection,
                audit_row(
                    AuditKind.JOB_RESULTS_BUILT,
                    actor="worker",
                    study_instance_uid=job.study_instance_uid,
                    detail={"job": job_id, "objects": [r.kind for r in stored]},
                    occurred_at=now,
                ),
            )
        self._release_prefetched(job.series_instance_uid)
        return stored

    def _release_prefetched(self, series_instance_uid: str) -> None:
        """The series' prefetch cache goes once no other job of the series still needs it
        (the age sweep takes what a failed job left)."""
        with self.engine.connect() as connection:
            waiting = connection.execute(
                select(Job.id).where(
                    Job.series_instance_uid == series_instance_uid,
                    Job.results_built_at.is_(None),
                    Job.state.not_in(TERMINAL_JOB_STATES),
                )
            ).first()
        if waiting is None:
            SeriesCache(self.settings.data_dir, series_instance_uid).remove()
        sweep(self.settings.data_dir, self.settings.prefetch.max_age_s)

    def _delivered(self, job_id: int, stored: list[StoredResult]) -> JobOutcome:
        with self.engine.connect() as connection:
            job = self._job(connection, job_id)
        if job.shadow_of is not None:
            return self._shadow_stored(job_id, stored)
        started = time.perf_counter()
        if job.destinations:
            Deliverer(self.settings, self.engine).deliver_due(job.study_instance_uid)
        rows = self._deliveries(job.destinations, stored)
        in_flight_until = time.monotonic() + IN_FLIGHT_WAIT_S
        while _in_flight(rows) and time.monotonic() < in_flight_until:
            time.sleep(0.1)
            rows = self._deliveries(job.destinations, stored)
        delivery_s = round(time.perf_counter() - started, 3)
        failed = [r for r in rows if r.state == DeliveryState.FAILED]
        pending = [r for r in rows if r.state == DeliveryState.PENDING]
        if failed:
            first = failed[0]
            return self.fail(job_id, f"delivery to {first.destination} failed: {first.last_error}")
        if pending:
            now = utcnow()
            wait = min((_aware(r.next_attempt_at) - now).total_seconds() for r in pending)
            message = f"{len(pending)} delivery(ies) pending: {pending[0].last_error or 'due'}"
            self._update(job_id, None, last_error=message, stage_seconds={"delivery": delivery_s})
            return JobOutcome(
                JobState.RESULTS_BUILT,
                retry_in_s=max(1.0, min(wait, self.settings.queue.retry_backoff_max_s)),
                message=message,
            )
        now = utcnow()
        self._update(
            job_id,
            AuditKind.JOB_DELIVERED,
            detail={"destinations": job.destinations, "objects": len(stored)},
            stage_seconds={"delivery": delivery_s},
            state=JobState.DELIVERED,
            delivered_at=now,
            finished_at=now,
            last_error=None,
        )
        return JobOutcome(JobState.DELIVERED)

    def _deliveries(self, destinations: list[str], stored: list[StoredResult]) -> list[Any]:
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(
                        Delivery.destination,
                        Delivery.state,
                        Delivery.last_error,
                        Delivery.next_attempt_at,
                    ).where(
                        Delivery.sop_instance_uid.in_([r.sop_instance_uid for r in stored]),
                        Delivery.destination.in_(destinations),
                    )
                ).all()
            )

    def _shadow_stored(self, job_id: int, stored: list[StoredResult]) -> JobOutcome:
        """A shadow job ends once its results are stored: nothing is sent anywhere."""
        self._update(
            job_id,
            AuditKind.SHADOW_JOB_STORED,
            detail={"objects": [r.kind for r in stored]},
            state=JobState.STORED,
            finished_at=utcnow(),
            last_error=None,
        )
        return JobOutcome(JobState.STORED)

    def _compare_shadow(self, job_id: int) -> None:
        """Compare the job with its shadow (or primary) once both have inferred. A failed
        comparison is logged, never the job's failure: the primary's results go out."""
        try:
            compare_ready_pairs(
                self.engine, self.registry, self.settings.jobs_dir, job_id, self._writers
            )
        except Exception as exc:
            raise_time_limit(exc)
            LOGGER.warning(
                "job %d: shadow comparison failed: %s: %s", job_id, type(exc).__name__, exc
            )


def raise_time_limit(exc: BaseException) -> None:
    """Re-raise the task's soft time limit when a layer below wrapped it in its own error
    (the Triton client's retry loop catches every Exception and classifies it), so the task
    records "time limit reached" and does not retry or fail for a made-up reason."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, SoftTimeLimitExceeded):
            raise seen
        seen = seen.__cause__ or seen.__context__


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
