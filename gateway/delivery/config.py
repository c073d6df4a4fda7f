"""Destinations and delivery policy (nested in the gateway settings)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator

from gateway.ae_title import check_ae_title
from gateway.results.forms import DEFAULT_FORMS, ResultForm, unique_forms
from gateway.settings_section import SettingsSection


def _default_forms() -> list[ResultForm]:
    return list(DEFAULT_FORMS)


# What the destination's viewer can show; the results are sent in each of these forms.
Forms = Annotated[
    list[ResultForm],
    AfterValidator(unique_forms),
    Field(
        default_factory=_default_forms,
        description="Result forms to send: seg_sr, gsps, sc, kos (default seg_sr).",
    ),
]


class DestinationTLS(SettingsSection):
    """TLS to a DICOM destination; a client certificate when the peer wants mutual TLS."""

    ca_file: Path = Field(description="CA bundle that signed the destination's certificate.")
    cert_file: Path | None = None
    key_file: Path | None = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _files(self) -> DestinationTLS:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("expected cert_file and key_file together, found only one")
        for name in ("ca_file", "cert_file", "key_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{name}: expected an existing file, found {path}")
        return self


class DicomDestination(SettingsSection):
    """A DICOM Storage SCP (a PACS) reached by C-STORE."""

    kind: Literal["dicom"] = "dicom"
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    calling_ae_title: str | None = Field(
        default=None, description="Our AE title towards this peer; default dicom.ae_title."
    )
    tls: DestinationTLS | None = None
    forms: Forms

    @field_validator("ae_title", "calling_ae_title")
    @classmethod
    def _ae(cls, value: str | None) -> str | None:
        return None if value is None else check_ae_title(value)


class DicomWebDestination(SettingsSection):
    """A DICOMweb server reached by STOW-RS (POST {url}/studies)."""

    kind: Literal["dicomweb"] = "dicomweb"
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str = Field(pattern=r"^https?://", description="DICOMweb root, e.g. .../dicom-web")
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = Field(default=None, description="Bearer token.")
    ca_file: Path | None = None
    forms: Forms

    @model_validator(mode="after")
    def _auth(self) -> DicomWebDestination:
        if (self.username is None) != (self.password is None):
            raise ValueError("expected username and password together, found only one")
        if self.token is not None and self.username is not None:
            raise ValueError("expected either basic auth or a token, found both")
        return self


Destination = Annotated[DicomDestination | DicomWebDestination, Field(discriminator="kind")]


class DeliverySettings(SettingsSection):
    """Retries, back-off and timeouts of every delivery."""

    max_attempts: int = Field(
        default=8, ge=1, description="Attempts of a transient failure before it is failed."
    )
    backoff_initial_s: float = Field(default=10.0, gt=0)
    backoff_max_s: float = Field(default=900.0, gt=0)
    backoff_multiplier: float = Field(default=3.0, ge=1.0)
    connect_timeout_s: float = Field(default=10.0, gt=0, description="TCP connect + ACSE.")
    response_timeout_s: float = Field(
        default=120.0, gt=0, description="Wait for a C-STORE response or an HTTP reply."
    )
    batch_size: int = Field(default=50, ge=1, description="Objects per association or POST.")
    poll_interval_s: float = Field(
        default=5.0, gt=0, description="How often the gateway looks for deliveries due."
    )

    def backoff_s(self, attempts: int) -> float:
        """Delay before attempt `attempts + 1`, after `attempts` failed ones."""
        return float(
            min(
                self.backoff_max_s,
                self.backoff_initial_s * self.backoff_multiplier ** (attempts - 1),
            )
        )
