"""The studies page's search: fields read from the request, checked (each problem a message
for the user, never a 500), and the query they make, every field ANDed.

Accession Number and Patient ID are matched exactly through their keyed hashes
(gateway/patient_index.py), as stored at ingest. Typed in clear they come only by POST (the
search form): the list's URL, and so the access log, browser history and paging links,
carry only the hashes (`accession_hash`, `patient_hash`). Job fields (rule, pipeline, job
state, findings) must hold for one and the same job of the study.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime

from sqlalchemy import ColumnElement, Select, exists, func, select

from gateway.models import Job, JobState, Series, Study, StudyState
from gateway.patient_index import PatientIndex
from gateway.web.findings_match import Verdict, verdict_clause

AE_TITLE_MAX = 16
MODALITY_MAX = 16
UID_MAX = 64
NAME_MAX = 64
IDENTIFIER_MAX = 64  # Patient ID is LO (64), Accession Number SH (16): no longer value exists
_HASH = re.compile(r"^[0-9a-f]{64}$")

# Clear identifiers (form only) and the hashes that stand for them in URLs.
CLEAR_IDENTIFIERS = {"accession_number": "accession_hash", "patient_id": "patient_hash"}
IDENTIFIER_LABELS = {"accession_hash": "Accession number", "patient_hash": "Patient ID"}


@dataclass(frozen=True)
class StudySearch:
    """What the user asked for; "" means any. Dates as YYYYMMDD (as StudyDate is stored)."""

    uid: str = ""
    accession_hash: str = ""
    patient_hash: str = ""
    date_from: str = ""
    date_to: str = ""
    modality: str = ""
    calling_ae: str = ""
    state: str = ""
    rule: str = ""
    pipeline: str = ""
    job_state: str = ""
    findings: str = ""

    @property
    def by_identifier(self) -> bool:
        """Matches on a patient's Accession Number or Patient ID (roles that may see them)."""
        return bool(self.accession_hash or self.patient_hash)

    @property
    def by_job(self) -> bool:
        return bool(self.rule or self.pipeline or self.job_state or self.findings)

    def query_args(self) -> dict[str, str]:
        """The non-empty fields as URL parameters (dates as YYYY-MM-DD, as the form)."""
        out: dict[str, str] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if value and field.name in ("date_from", "date_to"):
                value = f"{value[:4]}-{value[4:6]}-{value[6:]}"
            if value:
                out[field.name] = value
        return out

    def without(self, name: str) -> dict[str, str]:
        """query_args() less one field (the page's "clear" links)."""
        return replace(self, **{name: ""}).query_args()


@dataclass
class ParsedSearch:
    search: StudySearch
    problems: list[str]


def _date(label: str, raw: str, problems: list[str]) -> str:
    text = raw.strip()
    if not text:
        return ""
    for pattern in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return datetime.strptime(text, pattern).date().strftime("%Y%m%d")
        except ValueError:
            continue
    problems.append(f"{label}: expected a date as YYYY-MM-DD, found {text[:40]!r}")
    return ""


def _choice(label: str, raw: str, allowed: list[str], problems: list[str]) -> str:
    text = raw.strip().lower()
    if text and text not in allowed:
        problems.append(f"{label}: expected one of {', '.join(allowed)}, found {text[:40]!r}")
        return ""
    return text


def _bounded(label: str, raw: str, limit: int, problems: list[str]) -> str:
    text = raw.strip()
    if len(text) > limit:
        problems.append(f"{label}: expected at most {limit} characters, found {len(text)}")
        return ""
    return text


def _identifiers(
    args: Mapping[str, str], index: PatientIndex | None, problems: list[str]
) -> dict[str, str]:
    """The two hashes: from clear values (form, `index` given) or as hashes (URL)."""
    out: dict[str, str] = {}
    for clear, hashed in CLEAR_IDENTIFIERS.items():
        label = IDENTIFIER_LABELS[hashed]
        value = args.get(clear, "")
        if value.strip():
            if index is None:
                problems.append(
                    f"{label}: expected it from the search form (POST), found it in the URL; "
                    "identifiers are not sent in URLs, which access logs keep"
                )
            elif len(value.strip()) > IDENTIFIER_MAX:
                problems.append(
                    f"{label}: expected at most {IDENTIFIER_MAX} characters, "
                    f"found {len(value.strip())}"
                )
            else:
                hash_of = index.accession_number if hashed == "accession_hash" else index.patient_id
                out[hashed] = hash_of(value) or ""
        given = args.get(hashed, "").strip().lower()
        if given and hashed not in out:
            if _HASH.match(given):
                out[hashed] = given
            else:
                problems.append(f"{label}: expected a 64-digit hexadecimal hash, found another")
    return out


def parse_search(args: Mapping[str, str], index: PatientIndex | None = None) -> ParsedSearch:
    """Read the search from URL parameters (`index` None: identifiers only as hashes) or
    from the search form (`index` hashes the clear Accession Number and Patient ID)."""
    problems: list[str] = []
    date_from = _date("Study date from", args.get("date_from", ""), problems)
    date_to = _date("Study date to", args.get("date_to", ""), problems)
    if date_from and date_to and date_from > date_to:
        problems.append(
            f"Study date: expected the start on or before the end, found {date_from} after "
            f"{date_to}"
        )
    search = StudySearch(
        uid=_bounded("Study UID", args.get("uid", ""), UID_MAX, problems),
        date_from=date_from,
        date_to=date_to,
        modality=_bounded("Modality", args.get("modality", ""), MODALITY_MAX, problems).upper(),
        calling_ae=_bounded("Calling AE", args.get("calling_ae", ""), AE_TITLE_MAX, problems),
        state=_choice(
            "Study state", args.get("state", ""), [s.value for s in StudyState], problems
        ),
        rule=_bounded("Rule", args.get("rule", ""), NAME_MAX, problems),
        pipeline=_bounded("Pipeline", args.get("pipeline", ""), NAME_MAX, problems),
        job_state=_choice(
            "Job state", args.get("job_state", ""), [s.value for s in JobState], problems
        ),
        findings=_choice(
            "Findings", args.get("findings", ""), [v.value for v in Verdict], problems
        ),
        **_identifiers(args, index, problems),
    )
    return ParsedSearch(search, problems)


def job_conditions(
    search: StudySearch, dialect: str, thresholds: Mapping[str, float]
) -> list[ColumnElement[bool]]:
    """The conditions one job must meet (empty: no job field asked)."""
    conditions: list[ColumnElement[bool]] = []
    if search.rule:
        conditions.append(Job.rule_name == search.rule)
    if search.pipeline:
        conditions.append(Job.pipeline == search.pipeline)
    if search.job_state:
        conditions.append(Job.state == JobState(search.job_state))
    if search.findings:
        conditions.append(verdict_clause(Verdict(search.findings), dialect, thresholds))
    return conditions


def studies_query(
    search: StudySearch, dialect: str, thresholds: Mapping[str, float]
) -> Select[tuple[Study]]:
    """The studies matching every field of `search` (unordered)."""
    query = select(Study)
    if search.uid:
        query = query.where(Study.study_instance_uid.startswith(search.uid, autoescape=True))
    if search.accession_hash:
        query = query.where(Study.accession_number_hash == search.accession_hash)
    if search.patient_hash:
        query = query.where(Study.patient_id_hash == search.patient_hash)
    if search.date_from:
        query = query.where(Study.study_date >= search.date_from)
    if search.date_to:
        query = query.where(Study.study_date <= search.date_to)
    if search.modality:
        query = query.where(
            exists().where(
                Series.study_id == Study.id, func.upper(Series.modality) == search.modality
            )
        )
    if search.calling_ae:
        query = query.where(func.upper(Study.first_calling_ae) == search.calling_ae.upper())
    if search.state:
        query = query.where(Study.state == StudyState(search.state))
    conditions = job_conditions(search, dialect, thresholds)
    if conditions:
        # A semi-join, not a correlated EXISTS: jobs.study_id has no index, and SQLite
        # would scan every job (parsing its JSON) once per study.
        query = query.where(Study.id.in_(select(Job.study_id).where(*conditions)))
    return query
