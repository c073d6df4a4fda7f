"""Database models: what was received (study, series, instance) and the audit log.

Only UIDs and technical or routing attributes are kept in columns; patient identity stays in
the DICOM files.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

UID = String(64)
AE_TITLE = String(16)


class Base(DeclarativeBase):
    pass


class StudyState(enum.StrEnum):
    RECEIVING = "receiving"  # instances arriving, never completed yet
    COMPLETE = "complete"  # quiet period passed
    UPDATED = "updated"  # completed before, then a late instance arrived


class Study(Base):
    __tablename__ = "studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    state: Mapped[StudyState] = mapped_column(
        Enum(StudyState, name="study_state", values_callable=lambda e: [m.value for m in e]),
        default=StudyState.RECEIVING,
    )
    study_date: Mapped[str | None] = mapped_column(String(8))
    study_description: Mapped[str | None] = mapped_column(String(64))
    first_calling_ae: Mapped[str | None] = mapped_column(AE_TITLE)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    completed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    completion_count: Mapped[int] = mapped_column(Integer, default=0)
    completed_by: Mapped[str | None] = mapped_column(
        String(64), doc="The signal that completed it last: quiet period, MPPS, commitment."
    )
    reopened_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="When a late instance last reopened the complete study."
    )
    routed_generation: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", doc="The completion_count last routed."
    )
    series_hold_reason: Mapped[str | None] = mapped_column(
        Text, doc="Why the series selected for the model looks incomplete, while held."
    )
    series_held_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="When the hold began (its deadline counts from here)."
    )
    accession_number_hash: Mapped[str | None] = mapped_column(
        String(64), index=True, doc="HMAC-SHA256 of the Accession Number (gateway/patient_index)."
    )
    patient_id_hash: Mapped[str | None] = mapped_column(
        String(64), index=True, doc="HMAC-SHA256 of the Patient ID (gateway/patient_index)."
    )
    # Retention (gateway/retention/): rows and audit stay, the spool files go.
    spool_purged_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="When retention last decided to purge its spool files."
    )
    spool_purge_through_id: Mapped[int | None] = mapped_column(
        Integer, doc="Instances with this id or lower lose their files; later ones keep theirs."
    )
    spool_purge_pending: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default=false(),
        doc="Decided, files not yet all removed (a crash in between): the next pass ends it.",
    )

    series: Mapped[list[Series]] = relationship(back_populates="study")

    __table_args__ = (Index("ix_studies_state_last_received", "state", "last_received_at"),)


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    modality: Mapped[str | None] = mapped_column(String(16))
    body_part_examined: Mapped[str | None] = mapped_column(String(64))
    series_description: Mapped[str | None] = mapped_column(String(64))
    series_number: Mapped[int | None] = mapped_column(Integer)
    slice_thickness: Mapped[float | None] = mapped_column(Float)
    frame_of_reference_uid: Mapped[str | None] = mapped_column(UID)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    interrupted_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True),
        doc="An association that stored instances of it ended without A-RELEASE (sender died).",
    )
    interrupted_detail: Mapped[str | None] = mapped_column(
        String(256), doc="How that association ended (AE, address, count; no PHI)."
    )

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    instance_number: Mapped[int | None] = mapped_column(Integer)
    file_path: Mapped[str] = mapped_column(Text, doc="Relative to the spool directory.")
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    calling_ae: Mapped[str] = mapped_column(AE_TITLE)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    slice_position: Mapped[float | None] = mapped_column(
        Float, doc="ImagePositionPatient along the slice normal (mm)."
    )
    images_in_acquisition: Mapped[int | None] = mapped_column(Integer)
    acquisition_number: Mapped[int | None] = mapped_column(Integer)

    series: Mapped[Series] = relationship(back_populates="instances")


class DeliveryState(enum.StrEnum):
    PENDING = "pending"  # to be sent (again) once next_attempt_at has passed
    DELIVERED = "delivered"  # the destination confirmed it
    FAILED = "failed"  # permanent error, or transient ones until max_attempts


class Delivery(Base):
    """One result object for one destination. `next_attempt_at` also leases a pending row to
    the sender that claimed it: if that sender dies, the row falls due again."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    destination: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    sop_instance_uid: Mapped[str] = mapped_column(UID)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    kind: Mapped[str] = mapped_column(String(16), doc="seg or sr")
    file_path: Mapped[str] = mapped_column(Text, doc="Relative to the results directory.")
    state: Mapped[DeliveryState] = mapped_column(
        Enum(DeliveryState, name="delivery_state", values_callable=lambda e: [m.value for m in e]),
        default=DeliveryState.PENDING,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("destination", "sop_instance_uid", name="uq_deliveries_object"),
        Index("ix_deliveries_state_next_attempt", "state", "next_attempt_at"),
    )


class RoutingRule(Base):
    """A routing rule (seeded from the settings, edited in the admin UI). Lower `position`
    is tried first."""

    __tablename__ = "routing_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    position: Mapped[int] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    priority: Mapped[str] = mapped_column(String(16), default="routine")
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    pipeline: Mapped[str] = mapped_column(String(64))
    destinations: Mapped[list[str] | None] = mapped_column(JSON)
    rerun_on_update: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # the prior study this rule waits for (PriorRequirement as JSON); None: no prior
    prior: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    shadow_pipeline: Mapped[str | None] = mapped_column(
        String(64), doc="A second pipeline run in shadow: results stored, never delivered."
    )
    trigger: Mapped[str] = mapped_column(
        String(8), default="study", server_default="study", doc="study or series"
    )
    series_quiet_period_s: Mapped[float | None] = mapped_column(Float)
    quiet_period_s: Mapped[float | None] = mapped_column(
        Float, doc="This rule's study quiet period, in place of assembly.quiet_period_s."
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    INFERRED = "inferred"
    RESULTS_BUILT = "results_built"
    DELIVERED = "delivered"
    FAILED = "failed"  # dead letter: a permanent error, or transient ones past the limit
    CANCELLED = "cancelled"
    STORED = "stored"  # a shadow job's end: results built and stored, never delivered


TERMINAL_JOB_STATES = (JobState.DELIVERED, JobState.FAILED, JobState.CANCELLED, JobState.STORED)


class Job(Base):
    """One pipeline run for one study generation (its completion count) and model versions.
    The unique key makes queueing idempotent; the stage timestamps make the task skip what
    is done when it runs again."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"))
    study_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    generation: Mapped[int] = mapped_column(Integer, doc="The study's completion_count.")
    rule_name: Mapped[str] = mapped_column(String(64))
    pipeline: Mapped[str] = mapped_column(String(64))
    model_key: Mapped[str] = mapped_column(String(255), doc="name:version of each model.")
    series_instance_uid: Mapped[str] = mapped_column(UID, doc="The series sent to the models.")
    destinations: Mapped[list[str]] = mapped_column(JSON)
    priority: Mapped[str] = mapped_column(String(16))
    state: Mapped[JobState] = mapped_column(
        Enum(JobState, name="job_state", values_callable=lambda e: [m.value for m in e]),
        default=JobState.QUEUED,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, doc="Findings, no PHI.")
    stage_seconds: Mapped[dict[str, float] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    enqueued_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="When the task was handed to the broker."
    )
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    inferred_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    results_built_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    pipeline_version: Mapped[str | None] = mapped_column(
        String(32), doc="The pipeline file's version when the job was made."
    )
    shadow_of: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE", name="fk_jobs_shadow_of"),
        index=True,
        doc="A shadow job: the primary job it runs beside; its results are never delivered.",
    )
    # The runner that holds the job now (gateway/jobs/claim.py): one at a time.
    claimed_by: Mapped[str | None] = mapped_column(
        String(255), doc="Worker/pid/task/token of the runner holding the lease."
    )
    lease_until: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="The holder's lease ends then unless renewed."
    )

    __table_args__ = (
        UniqueConstraint(
            "study_instance_uid", "pipeline", "model_key", "generation", name="uq_jobs_run"
        ),
        Index("ix_jobs_state", "state"),
        Index("ix_jobs_pipeline_created", "pipeline", "created_at"),
    )


class AuditEvent(Base):
    """Append-only: the migration installs triggers that refuse UPDATE and DELETE."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    kind: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str | None] = mapped_column(String(128))
    source_address: Mapped[str | None] = mapped_column(String(64))
    study_instance_uid: Mapped[str | None] = mapped_column(UID, index=True)
    sop_instance_uid: Mapped[str | None] = mapped_column(UID)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class User(Base):
    """A person who may sign in to the admin web UI. Roles: admin > operator > viewer."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255), doc="scrypt$n$r$p$salt$hash")
    role: Mapped[str] = mapped_column(String(16), doc="admin, operator or viewer")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DestinationRecord(Base):
    """A destination (seeded from the settings, edited in the admin UI). `config` is the
    destination's settings without name and kind, secrets (STOW password or token) included:
    the UI never renders them back and no log line or audit event carries them."""

    __tablename__ = "destinations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16), doc="dicom or dicomweb")
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebSession(Base):
    """A signed-in admin UI session. The cookie carries a random token; only its SHA-256 is
    kept here, so a copy of this table signs nobody in. Ended sessions keep their row (who,
    when, why) until pruned."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source_address: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(200), doc="Truncated.")
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    end_reason: Mapped[str | None] = mapped_column(String(64))


class LoginFailure(Base):
    """A failed sign-in, counted by the login limits (per username and address, per address,
    per username, per trusted browser); rows older than the window are pruned."""

    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    username: Mapped[str] = mapped_column(String(64))
    source_address: Mapped[str] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(
        String(64), doc="SHA-256 of the trusted-browser cookie's id, if one was presented."
    )

    __table_args__ = (
        Index("ix_login_failures_username", "username", "occurred_at"),
        Index("ix_login_failures_address", "source_address", "occurred_at"),
    )


class ApiToken(Base):
    """A DICOMweb client's credential. Only the SHA-256 of the secret is kept (the secret is
    shown once, when made); a revoked token keeps its row (who, when) and signs nobody in."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_name: Mapped[str] = mapped_column(
        String(16), unique=True, doc="Also the calling AE title of what it stores."
    )
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(16), doc="store, read or both")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str | None] = mapped_column(String(64))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_by: Mapped[str | None] = mapped_column(String(64))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_address: Mapped[str | None] = mapped_column(String(64))


class PullRun(Base):
    """A retrospective run: studies found on the source archive by a query (accession
    numbers, Study Instance UIDs, or a date range and modality), fetched in batches. Once
    resolved to studies, the accession numbers in `criteria` are replaced by their count."""

    __tablename__ = "pull_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    state: Mapped[str] = mapped_column(String(16), doc="queued, running, done or failed")
    criteria: Mapped[dict[str, Any]] = mapped_column(JSON)
    transport: Mapped[str] = mapped_column(String(16), doc="c-move, c-get or wado-rs")
    requested_by: Mapped[str] = mapped_column(String(128))
    batch_size: Mapped[int] = mapped_column(Integer)
    studies_total: Mapped[int] = mapped_column(Integer, default=0)
    studies_pulled: Mapped[int] = mapped_column(Integer, default=0)
    studies_failed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PulledStudy(Base):
    """One study of a run (its batch) or a prior of a job: `pulled` only once every instance
    the source listed is stored. Until then, or after a failed pull, the study is not routed."""

    __tablename__ = "pulled_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("pull_runs.id", ondelete="CASCADE"))
    batch: Mapped[int | None] = mapped_column(Integer, doc="1-based batch of the run.")
    purpose: Mapped[str] = mapped_column(String(16), doc="retrospective or prior")
    study_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    state: Mapped[str] = mapped_column(String(16), doc="pending, pulled or failed")
    instances_listed: Mapped[int | None] = mapped_column(Integer)
    instances_stored: Mapped[int | None] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    pulled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_pulled_studies_run_batch", "run_id", "batch"),)


class JobPrior(Base):
    """The prior a job asked for (its rule's `prior`): the job is not sent to the workers
    while `waiting`, until `deadline_at`; then it records which prior it used, or why none."""

    __tablename__ = "job_priors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, doc="The follow-up study.")
    state: Mapped[str] = mapped_column(
        String(16), doc="waiting, found, none, timed_out, failed or skipped"
    )
    prior_study_instance_uid: Mapped[str | None] = mapped_column(UID)
    reason: Mapped[str | None] = mapped_column(Text)
    deadline_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="When a puller took it (a lease: a dead one's lapses)."
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_job_priors_state", "state"),)


class ShadowComparison(Base):
    """A shadow job against its primary job on the same series (gateway/shadow/compare.py):
    study-level finding and score, and the Dice of each segment matched by overlap."""

    __tablename__ = "shadow_comparisons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shadow_job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), unique=True
    )
    primary_job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    study_instance_uid: Mapped[str] = mapped_column(UID)
    primary_positive: Mapped[bool | None] = mapped_column(Boolean)
    shadow_positive: Mapped[bool | None] = mapped_column(Boolean)
    findings_agree: Mapped[bool | None] = mapped_column(
        Boolean, doc="Both present or both absent (None when either is unknown)."
    )
    primary_score: Mapped[float | None] = mapped_column(Float)
    shadow_score: Mapped[float | None] = mapped_column(Float)
    score_difference: Mapped[float | None] = mapped_column(Float, doc="Shadow minus primary.")
    primary_findings: Mapped[int] = mapped_column(Integer)
    shadow_findings: Mapped[int] = mapped_column(Integer)
    mean_dice: Mapped[float | None] = mapped_column(Float)
    segments: Mapped[list[dict[str, Any]]] = mapped_column(JSON, doc="Per matched segment.")
    problem: Mapped[str | None] = mapped_column(Text, doc="Why no Dice could be computed.")
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Heartbeat(Base):
    """The last sign of life of one part (gateway/health/): a listener process writes its own
    row every `interval_seconds`; the health grid records the workers, Triton, its models and
    the broker it found answering (interval 0). A row whose beat is late names a part that
    died without a word."""

    __tablename__ = "heartbeats"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True, doc="e.g. host/listener-2")
    part: Mapped[str] = mapped_column(String(32), doc="listener, worker, triton, model, broker")
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer, doc="0 when recorded by the health grid.")
    interval_seconds: Mapped[float] = mapped_column(Float)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, doc="No PHI.")
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    beat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class PerformedProcedureStep(Base):
    """A Modality Performed Procedure Step (PS3.4 F) the gateway is the SCP of: its status
    and, once COMPLETED, the instances its Performed Series Sequence lists
    (`expected_instances`). UIDs only; no patient or procedure text."""

    __tablename__ = "performed_procedure_steps"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    status: Mapped[str] = mapped_column(String(16), doc="IN PROGRESS, COMPLETED, DISCONTINUED")
    study_instance_uid: Mapped[str | None] = mapped_column(UID, index=True)
    calling_ae: Mapped[str] = mapped_column(AE_TITLE)
    source_address: Mapped[str | None] = mapped_column(String(64))
    discontinued_reason: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    settled_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True),
        doc="When it stopped being a pending signal: its study completed by it, or it was "
        "discontinued (the quiet period decides then).",
    )

    __table_args__ = (Index("ix_pps_status_settled", "status", "settled_at"),)


class StorageCommitment(Base):
    """A Storage Commitment Push Model request (PS3.4 J): answered by N-EVENT-REPORT once
    every listed instance is stored, or when `answer_by` passes. Kept so a restart before
    the report still sends it."""

    __tablename__ = "storage_commitments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    transaction_uid: Mapped[str] = mapped_column(UID, unique=True)
    calling_ae: Mapped[str] = mapped_column(AE_TITLE)
    source_address: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), doc="waiting, reported or failed")
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    answer_by: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), doc="Report by then, missing instances as failures."
    )
    claimed_by: Mapped[str | None] = mapped_column(
        String(128), doc="The listener process holding its association (or sending it)."
    )
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    event_type: Mapped[int | None] = mapped_column(Integer, doc="1 all stored, 2 failures")
    failed_count: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    reported_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    reported_via: Mapped[str | None] = mapped_column(String(32), doc="same or new association")
    settled_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), doc="When its list completed the studies it names."
    )

    __table_args__ = (Index("ix_storage_commitments_state", "state"),)


class ExpectedInstance(Base):
    """An instance a completion signal lists: an MPPS's Performed Series Sequence or a
    storage commitment's Referenced SOP Sequence."""

    __tablename__ = "expected_instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mpps_id: Mapped[int | None] = mapped_column(
        ForeignKey("performed_procedure_steps.id", ondelete="CASCADE"), index=True
    )
    commitment_id: Mapped[int | None] = mapped_column(
        ForeignKey("storage_commitments.id", ondelete="CASCADE"), index=True
    )
    series_instance_uid: Mapped[str | None] = mapped_column(UID, index=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)


class SeriesTrigger(Base):
    """A rule started on one complete series before its study completed (`trigger` series,
    gateway/completion/series_trigger.py): which signal, and how many instances the series
    had, so the study's completion can tell whether a late instance changed it."""

    __tablename__ = "series_triggers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    rule_name: Mapped[str] = mapped_column(String(64))
    generation: Mapped[int] = mapped_column(Integer, doc="The job's generation.")
    instance_count: Mapped[int] = mapped_column(Integer)
    signal: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    triggered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint(
            "study_id", "rule_name", "generation", name="uq_series_triggers_generation"
        ),
    )
