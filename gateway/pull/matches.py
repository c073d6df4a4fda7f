"""What a query on the source archive asks and what it answers: small records of UIDs and
routing attributes. The one identifying key a query may carry (Accession Number, Patient ID)
lives only in the `StudyQuery` sent; nothing here is logged."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StudyQuery:
    """Study-level matching keys; None means "any". Dates are DICOM DA (YYYYMMDD)."""

    study_instance_uid: str | None = None
    accession_number: str | None = field(default=None, repr=False)
    patient_id: str | None = field(default=None, repr=False)
    date_from: str | None = None
    date_to: str | None = None
    modality: str | None = None

    @property
    def date_range(self) -> str | None:
        """The StudyDate matching value: a DA range or one date."""
        if self.date_from is None and self.date_to is None:
            return None
        if self.date_from == self.date_to:
            return self.date_from
        return f"{self.date_from or ''}-{self.date_to or ''}"


@dataclass(frozen=True, slots=True)
class StudyMatch:
    study_instance_uid: str
    study_date: str | None = None
    modalities: tuple[str, ...] = ()
    study_description: str | None = None
    instance_count: int | None = None


@dataclass(frozen=True, slots=True)
class SeriesMatch:
    series_instance_uid: str
    modality: str | None = None
    body_part_examined: str | None = None
    series_description: str | None = None
    series_number: int | None = None
    instance_count: int | None = None


@dataclass(frozen=True, slots=True)
class InstanceMatch:
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str | None = None
