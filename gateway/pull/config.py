"""The source archive the gateway pulls from, and the deadlines and retries of every pull.

Like a destination (gateway/delivery/config.py), every network step has a deadline and a
transient failure is retried with back-off up to `max_attempts`; a permanent one (the PACS
does not know our AE, no such study) fails at once.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from gateway.ae_title import check_ae_title
from gateway.delivery.config import DestinationTLS
from gateway.settings_section import SettingsSection


class Retrieval(enum.StrEnum):
    """How a study is retrieved from a DIMSE source."""

    MOVE = "move"  # C-MOVE to our own AE: the PACS sends to the listener (must know our AE)
    GET = "get"  # C-GET: the instances come back on our association


class DicomSource(SettingsSection):
    """A PACS reached by DIMSE: C-FIND (Study Root), then C-MOVE or C-GET."""

    kind: Literal["dicom"] = "dicom"
    name: str = Field(default="pacs", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    ae_title: str = Field(description="The PACS's AE title (called AE).")
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str | None = Field(
        default=None, description="Our AE title towards the PACS; default dicom.ae_title."
    )
    retrieve: Retrieval = Retrieval.MOVE
    move_destination: str | None = Field(
        default=None,
        description="C-MOVE destination AE title: the gateway's listener as the PACS knows it; "
        "default dicom.ae_title.",
    )
    tls: DestinationTLS | None = None

    @field_validator("ae_title", "calling_ae_title", "move_destination")
    @classmethod
    def _ae(cls, value: str | None) -> str | None:
        return None if value is None else check_ae_title(value)

    @property
    def transport(self) -> str:
        return f"c-{self.retrieve.value}"


class DicomWebSource(SettingsSection):
    """A DICOMweb server: QIDO-RS to find, WADO-RS to retrieve (multipart/related)."""

    kind: Literal["dicomweb"] = "dicomweb"
    name: str = Field(default="pacs", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str = Field(pattern=r"^https?://", description="DICOMweb root, e.g. .../dicom-web")
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = Field(default=None, description="Bearer token.")
    ca_file: Path | None = None
    sender_label: str = Field(
        default="DICOMWEB",
        description="Recorded as the calling AE of the instances retrieved (a rule's "
        "calling_ae condition sees it).",
    )

    @field_validator("sender_label")
    @classmethod
    def _label(cls, value: str) -> str:
        return check_ae_title(value)

    @model_validator(mode="after")
    def _auth(self) -> DicomWebSource:
        if (self.username is None) != (self.password is None):
            raise ValueError("expected username and password together, found only one")
        if self.token is not None and self.username is not None:
            raise ValueError("expected either basic auth or a token, found both")
        if self.ca_file is not None and not Path(self.ca_file).is_file():
            raise ValueError(f"ca_file: expected an existing file, found {self.ca_file}")
        return self

    @property
    def transport(self) -> str:
        return "wado-rs"


SourceArchive = Annotated[DicomSource | DicomWebSource, Field(discriminator="kind")]


class PullSettings(SettingsSection):
    """Where studies are pulled from, deadlines, retries and the size of a run's batches."""

    source: SourceArchive | None = Field(
        default=None, description="The archive to pull from; none: pulling is off."
    )
    connect_timeout_s: float = Field(default=10.0, gt=0, description="TCP connect + ACSE.")
    response_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest wait for any one reply: a C-FIND/C-MOVE/C-GET response, an "
        "HTTP reply or the next bytes of a WADO-RS body.",
    )
    study_timeout_s: float = Field(
        default=1800.0, gt=0, description="Longest retrieval of one study, all instances."
    )
    max_attempts: int = Field(
        default=4, ge=1, description="Attempts of a transient failure before the pull fails."
    )
    backoff_initial_s: float = Field(default=5.0, ge=0)
    backoff_max_s: float = Field(default=300.0, ge=0)
    backoff_multiplier: float = Field(default=3.0, ge=1.0)
    batch_size: int = Field(default=10, ge=1, le=1000, description="Studies per batch of a run.")
    max_studies: int = Field(
        default=2000,
        ge=1,
        description="A run whose query lists more studies than this is refused (narrow it).",
    )
    poll_interval_s: float = Field(
        default=2.0, gt=0, description="How often the gateway looks for queued runs and priors."
    )

    def backoff_s(self, attempts: int) -> float:
        """Delay before attempt `attempts + 1`, after `attempts` failed ones."""
        return float(
            min(
                self.backoff_max_s,
                self.backoff_initial_s * self.backoff_multiplier ** max(0, attempts - 1),
            )
        )
