"""What a retrospective run asks for: accession numbers, Study Instance UIDs, or a query
(a date range, optionally one modality). Exactly one of the three."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gateway.pull.matches import StudyQuery

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MODALITY = re.compile(r"^[A-Z0-9]{1,16}$")
_MAX_KEYS = 10_000


def _date(value: str | None, name: str) -> str | None:
    if value is None or not value.strip():
        return None
    text = value.strip().replace("-", "")
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:8]))
        if len(text) != 8:
            raise ValueError
    except ValueError as exc:
        raise ValueError(
            f"{name}: expected a date YYYYMMDD or YYYY-MM-DD, found {value!r}"
        ) from exc
    return text


class PullCriteria(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not "no criteria"

    accession_numbers: list[str] = Field(default_factory=list, max_length=_MAX_KEYS)
    study_instance_uids: list[str] = Field(default_factory=list, max_length=_MAX_KEYS)
    date_from: str | None = None
    date_to: str | None = None
    modality: str | None = None

    @field_validator("accession_numbers")
    @classmethod
    def _accessions(cls, value: list[str]) -> list[str]:
        cleaned = list(dict.fromkeys(v.strip() for v in value if v.strip()))
        for item in cleaned:
            # The value is not echoed: an accession number identifies a patient's exam.
            if len(item) > 16 or "\\" in item or "*" in item or "?" in item:
                raise ValueError(
                    "expected accession numbers of at most 16 characters without wildcards "
                    "or backslash, found one that is not"
                )
        return cleaned

    @field_validator("study_instance_uids")
    @classmethod
    def _uids(cls, value: list[str]) -> list[str]:
        cleaned = list(dict.fromkeys(v.strip() for v in value if v.strip()))
        for uid in cleaned:
            if len(uid) > 64 or not _UID.match(uid):
                raise ValueError(f"expected Study Instance UIDs (digits and dots), found {uid!r}")
        return cleaned

    @field_validator("modality")
    @classmethod
    def _modality(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        text = value.strip().upper()
        if not _MODALITY.match(text):
            raise ValueError(f"expected a modality such as CT or MR, found {value!r}")
        return text

    @model_validator(mode="after")
    def _one_kind(self) -> PullCriteria:
        self.date_from = _date(self.date_from, "date_from")
        self.date_to = _date(self.date_to, "date_to")
        kinds = [
            name
            for name, given in (
                ("accession numbers", bool(self.accession_numbers)),
                ("Study Instance UIDs", bool(self.study_instance_uids)),
                ("a date range", bool(self.date_from or self.date_to or self.modality)),
            )
            if given
        ]
        if len(kinds) != 1:
            raise ValueError(
                "expected exactly one of accession numbers, Study Instance UIDs or a date "
                f"range (with an optional modality), found {' and '.join(kinds) or 'none'}"
            )
        if kinds == ["a date range"] and not (self.date_from or self.date_to):
            raise ValueError("expected a date range with the modality, found only a modality")
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError(
                f"expected date_from <= date_to, found {self.date_from} > {self.date_to}"
            )
        return self

    def queries(self) -> list[StudyQuery]:
        if self.accession_numbers:
            return [StudyQuery(accession_number=a) for a in self.accession_numbers]
        if self.study_instance_uids:
            return [StudyQuery(study_instance_uid=u) for u in self.study_instance_uids]
        return [StudyQuery(date_from=self.date_from, date_to=self.date_to, modality=self.modality)]

    def redacted(self) -> dict[str, Any]:
        """What is kept once the studies are found: accession numbers only as a count."""
        data = self.model_dump(exclude_defaults=True)
        if self.accession_numbers:
            data["accession_numbers"] = len(self.accession_numbers)
        return data

    def summary(self) -> str:
        """For logs, audit events and the UI: no accession number."""
        if self.accession_numbers:
            return f"{len(self.accession_numbers)} accession number(s)"
        if self.study_instance_uids:
            return f"{len(self.study_instance_uids)} Study Instance UID(s)"
        span = f"{self.date_from or '...'} to {self.date_to or '...'}"
        return f"studies {span}" + (f", modality {self.modality}" if self.modality else "")
