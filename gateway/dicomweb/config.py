"""Settings of the DICOMweb server (`[dicomweb]`): what it serves and its bounds."""

from __future__ import annotations

from pydantic import Field, field_validator

from gateway.settings_section import SettingsSection


class DicomWebServerSettings(SettingsSection):
    """STOW-RS, QIDO-RS and WADO-RS under /dicomweb of the web server (`pacs-gateway web`)."""

    enabled: bool = Field(
        default=True,
        description="Serve /dicomweb. Every request needs an API token (admin UI, API tokens).",
    )
    max_stow_mb: int = Field(
        default=1024,
        ge=1,
        description="Largest STOW-RS request body. A larger Content-Length is answered 413 "
        "before anything is read; a chunked body is cut at this size (413, nothing stored).",
    )
    max_results: int = Field(
        default=1000,
        ge=1,
        description="Most matches one QIDO-RS response holds (a larger `limit` is lowered).",
    )
    public_url: str | None = Field(
        default=None,
        description="Base URL clients reach /dicomweb at, for BulkDataURI and RetrieveURL "
        "(e.g. https://gateway.example.org/dicomweb behind a reverse proxy). Unset: taken "
        "from the request.",
    )
    allow_basic_auth: bool = Field(
        default=True,
        description="Accept HTTP basic with a token's client name and secret (for clients "
        "that cannot send a bearer token).",
    )
    token_touch_interval_s: int = Field(
        default=60,
        ge=0,
        description="A token's last-used time is written at most this often (not on every "
        "request of a busy client).",
    )

    @field_validator("public_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, found {value!r}")
        return value.rstrip("/")
