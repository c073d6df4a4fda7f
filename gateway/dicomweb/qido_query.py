"""A QIDO-RS request's query parameters, checked: matching keys by level, limit, offset,
includefield, fuzzymatching (PS3.18 8.3.4). Accession Number and Patient ID become their
keyed hashes here (gateway/patient_index.py) and are matched exactly, nothing else."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Literal

from pydicom.datadict import keyword_for_tag, tag_for_keyword
from werkzeug.datastructures import MultiDict

from gateway.patient_index import PatientIndex


class Level(enum.StrEnum):
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"


class QueryError(Exception):
    """A parameter QIDO-RS cannot answer (400); the message says what was expected."""


STUDY_KEYS = {"StudyInstanceUID", "StudyDate", "ModalitiesInStudy", "AccessionNumber", "PatientID"}
SERIES_KEYS = {"SeriesInstanceUID", "Modality"}
INSTANCE_KEYS = {"SOPInstanceUID", "SOPClassUID"}
KEYS_BY_LEVEL = {
    Level.STUDY: STUDY_KEYS,
    Level.SERIES: STUDY_KEYS | SERIES_KEYS,
    Level.INSTANCE: STUDY_KEYS | SERIES_KEYS | INSTANCE_KEYS,
}
CONTROL_PARAMETERS = {"limit", "offset", "includefield", "fuzzymatching"}
_DATE = re.compile(r"^\d{8}$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_WILDCARD = re.compile(r"[*?]")


@dataclass
class QidoQuery:
    level: Level
    study_uids: list[str] | None = None
    study_date: tuple[str | None, str | None] | None = None
    modalities_in_study: list[str] | None = None
    accession_number_hash: str | None = None
    patient_id_hash: str | None = None
    series_uids: list[str] | None = None
    modalities: list[str] | None = None
    sop_uids: list[str] | None = None
    sop_class_uids: list[str] | None = None
    limit: int = 100
    offset: int = 0
    include: set[int] | Literal["all"] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)

    @property
    def has_study_conditions(self) -> bool:
        return any(
            v is not None
            for v in (
                self.study_uids,
                self.study_date,
                self.modalities_in_study,
                self.accession_number_hash,
                self.patient_id_hash,
            )
        )


def attribute_keyword(name: str) -> str | None:
    """A keyword ("PatientID") or a tag ("00100020") as a keyword; None if neither."""
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return keyword_for_tag(int(name, 16)) or None
    return name if tag_for_keyword(name) is not None else None


def _values(raw: list[str]) -> list[str]:
    """Every value of a repeated or list-valued parameter (comma or backslash separated)."""
    out: list[str] = []
    for item in raw:
        out.extend(v.strip() for v in re.split(r"[,\\]", item) if v.strip())
    return out


def _uids(keyword: str, raw: list[str]) -> list[str]:
    values = _values(raw)
    for value in values:
        if not _UID.match(value) or len(value) > 64:
            raise QueryError(f"{keyword}: expected UIDs (digits and dots), found {value[:70]!r}")
    return values


def _codes(keyword: str, raw: list[str]) -> list[str]:
    values = _values(raw)
    for value in values:
        if _WILDCARD.search(value) or len(value) > 16:
            raise QueryError(f"{keyword}: expected exact codes such as CT, found {value[:20]!r}")
    return values


def _date_range(raw: list[str]) -> tuple[str | None, str | None]:
    if len(raw) != 1:
        raise QueryError(f"StudyDate: expected one date or range, found {len(raw)}")
    value = raw[0].strip()
    low, dash, high = value.partition("-")
    bounds = (low or None, high or None) if dash else (low, low)
    if bounds == (None, None) or any(b is not None and not _DATE.match(b) for b in bounds):
        raise QueryError(
            "StudyDate: expected YYYYMMDD, YYYYMMDD-YYYYMMDD, -YYYYMMDD or YYYYMMDD-, "
            f"found {value[:30]!r}"
        )
    return bounds


def _hashed(keyword: str, raw: list[str]) -> str:
    if len(raw) != 1:
        raise QueryError(f"{keyword}: expected one value, found {len(raw)}")
    if _WILDCARD.search(raw[0]):
        raise QueryError(
            f"{keyword}: expected an exact value (it is kept only as a keyed hash, so "
            "wildcards cannot match), found a wildcard"
        )
    return raw[0]


def _int(name: str, raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise QueryError(f"{name}: expected a non-negative integer, found {raw[:20]!r}")
    return int(raw)


def _include(raw: list[str]) -> set[int] | Literal["all"]:
    tags: set[int] = set()
    for name in _values(raw):
        if name == "all":
            return "all"
        keyword = attribute_keyword(name)
        tag = None if keyword is None else tag_for_keyword(keyword)
        if tag is None:
            raise QueryError(f"includefield: expected attribute keywords or tags, found {name!r}")
        tags.add(tag)
    return tags


def _is_universal(values: list[str]) -> bool:
    """An empty value or '*' matches everything (PS3.4 C.2.2.2.3): no condition."""
    return all(v.strip() in ("", "*") for v in values)


def parse_query(
    args: MultiDict[str, str],
    level: Level,
    index: PatientIndex,
    max_results: int,
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
) -> QidoQuery:
    query = QidoQuery(level=level)
    allowed = KEYS_BY_LEVEL[level]
    for name in args:
        raw = args.getlist(name)
        if name in CONTROL_PARAMETERS:
            continue
        keyword = attribute_keyword(name)
        if keyword is None or keyword not in allowed:
            query.warnings.append(
                f"The {name[:64]} query parameter is not supported: it was ignored"
            )
            continue
        if _is_universal(raw):
            continue
        if keyword == "StudyInstanceUID":
            query.study_uids = _uids(keyword, raw)
        elif keyword == "SeriesInstanceUID":
            query.series_uids = _uids(keyword, raw)
        elif keyword == "SOPInstanceUID":
            query.sop_uids = _uids(keyword, raw)
        elif keyword == "SOPClassUID":
            query.sop_class_uids = _uids(keyword, raw)
        elif keyword == "StudyDate":
            query.study_date = _date_range(raw)
        elif keyword == "ModalitiesInStudy":
            query.modalities_in_study = _codes(keyword, raw)
        elif keyword == "Modality":
            query.modalities = _codes(keyword, raw)
        elif keyword == "AccessionNumber":
            query.accession_number_hash = index.accession_number(_hashed(keyword, raw))
        elif keyword == "PatientID":
            query.patient_id_hash = index.patient_id(_hashed(keyword, raw))
    if study_uid is not None:  # from the path: narrows whatever the parameters said
        query.study_uids = [u for u in (query.study_uids or [study_uid]) if u == study_uid]
    if series_uid is not None:
        query.series_uids = [u for u in (query.series_uids or [series_uid]) if u == series_uid]
    query.limit = min(_int("limit", args.get("limit"), max_results), max_results)
    query.offset = _int("offset", args.get("offset"), 0)
    query.include = _include(args.getlist("includefield"))
    if args.get("fuzzymatching", "").lower() == "true":
        query.warnings.append(
            "The fuzzymatching parameter is not supported. Only literal matching has been "
            "performed."
        )
    return query
