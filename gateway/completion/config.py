"""Settings of the completion signals: MPPS and Storage Commitment SCPs, and where a storage
commitment report goes when the requester's association has closed."""

from __future__ import annotations

from pydantic import Field, field_validator

from gateway.ae_title import check_ae_title
from gateway.settings_section import SettingsSection


class ReportPeer(SettingsSection):
    """A requester of storage commitment the gateway may call back (a new association for
    the N-EVENT-REPORT): never an address taken from the request itself."""

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)

    @field_validator("ae_title")
    @classmethod
    def _ae(cls, value: str) -> str:
        return check_ae_title(value)


class CompletionSettings(SettingsSection):
    mpps: bool = Field(
        default=True,
        description="Serve Modality Performed Procedure Step (N-CREATE, N-SET): a COMPLETED "
        "step completes its study once every instance it lists is stored.",
    )
    storage_commitment: bool = Field(
        default=True, description="Serve Storage Commitment Push Model (N-ACTION)."
    )
    commitment_wait_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="How long a storage commitment waits for listed instances still in "
        "flight before it reports them as failed (0x0112).",
    )
    report_peers: list[ReportPeer] = Field(
        default_factory=list,
        description="Where a storage commitment report goes when the requester's "
        "association has closed, by calling AE title.",
    )
    report_timeout_s: float = Field(default=30.0, gt=0, le=600)
    report_retry_s: float = Field(default=30.0, gt=0, le=3600)
    report_max_attempts: int = Field(default=10, ge=1, le=1000)
    claim_lease_s: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="A report held by a listener process that stopped answering for it is "
        "taken over after this long (after a restart, say).",
    )
    signal_refresh_s: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="How often a listener re-reads which studies have a pending signal (so "
        "an instance of another study costs no database round trip).",
    )
    reporter_poll_s: float = Field(default=0.2, gt=0, le=60)

    def report_peer(self, ae_title: str) -> ReportPeer | None:
        return next((p for p in self.report_peers if p.ae_title == ae_title.strip()), None)
