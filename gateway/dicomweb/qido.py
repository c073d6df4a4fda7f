"""QIDO-RS over what the gateway holds: the database narrows (UIDs, dates, modalities, the
keyed hashes), the stored files' headers answer (the database keeps no names or IDs), and
produced objects (SEG, SR, ...) from the results directory follow the received ones.

Order: received matches first (by database id), produced ones after; `offset` and `limit`
count over both."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.datadict import tag_for_keyword
from sqlalchemy import ColumnElement, Select, func, or_, select

from gateway.dicomweb.dicom_json import dataset_json, json_value
from gateway.dicomweb.holdings import Holdings, StoredHeader, read_stored_header
from gateway.dicomweb.produced import ProducedFile, produced_files, produced_studies
from gateway.dicomweb.qido_query import Level, QidoQuery
from gateway.models import Instance, Series, Study


def _tags(*keywords: str) -> tuple[int, ...]:
    return tuple(int(tag_for_keyword(k) or 0) for k in keywords)


STUDY_ATTRIBUTES = _tags(
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "TimezoneOffsetFromUTC",
    "StudyDescription",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
)
SERIES_ATTRIBUTES = _tags(
    "Modality",
    "SeriesDate",
    "SeriesTime",
    "SeriesDescription",
    "BodyPartExamined",
    "SeriesInstanceUID",
    "SeriesNumber",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
)
INSTANCE_ATTRIBUTES = _tags(
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
)


@dataclass(frozen=True)
class Match:
    """One matching study, series or instance and the file whose header answers for it."""

    study_uid: str
    series_uid: str | None
    sop_uid: str | None
    path: Path
    modality: str | None = None
    sop_class_uid: str | None = None
    count: int | None = None  # instances of a series


@dataclass
class QidoResult:
    matches: list[dict[str, Any]]
    more: bool  # matches beyond `limit`
    warnings: list[str]


class HeaderCache:
    """Headers read during one request, by path."""

    def __init__(self) -> None:
        self._headers: dict[Path, StoredHeader | None] = {}

    def get(self, path: Path) -> StoredHeader | None:
        if path not in self._headers:
            try:
                self._headers[path] = read_stored_header(path)
            except (OSError, ValueError, EOFError, TypeError, KeyError):
                self._headers[path] = None  # gone or unreadable: answered without it
        return self._headers[path]

    def modality(self, path: Path) -> str | None:
        header = self.get(path)
        value = None if header is None else header.dataset.get("Modality")
        return None if value in (None, "") else str(value)


class Qido:
    def __init__(self, holdings: Holdings, base_url: str) -> None:
        self.holdings = holdings
        self.engine = holdings.engine
        self.base_url = base_url
        self.headers = HeaderCache()

    # Conditions ----------------------------------------------------------------------
    def _study_conditions(self, query: QidoQuery) -> list[ColumnElement[bool]]:
        conditions: list[ColumnElement[bool]] = []
        if query.study_uids is not None:
            conditions.append(Study.study_instance_uid.in_(query.study_uids))
        if query.study_date is not None:
            low, high = query.study_date
            if low is not None:
                conditions.append(Study.study_date >= low)
            if high is not None:
                conditions.append(Study.study_date <= high)
        if query.accession_number_hash is not None:
            conditions.append(Study.accession_number_hash == query.accession_number_hash)
        if query.patient_id_hash is not None:
            conditions.append(Study.patient_id_hash == query.patient_id_hash)
        if query.modalities_in_study is not None:
            received = Study.id.in_(
                select(Series.study_id).where(Series.modality.in_(query.modalities_in_study))
            )
            produced = self._studies_with_produced(query.modalities_in_study)
            conditions.append(
                or_(received, Study.study_instance_uid.in_(produced)) if produced else received
            )
        return conditions

    def _studies_with_produced(self, modalities: Sequence[str]) -> list[str]:
        wanted = set(modalities)
        found = []
        for study in produced_studies(self.holdings.results_dir):
            files = produced_files(self.holdings.results_dir, [study])
            if any(self.headers.modality(f.path) in wanted for f in files):
                found.append(study)
        return found

    def _series_conditions(self, query: QidoQuery) -> list[ColumnElement[bool]]:
        conditions = self._study_conditions(query)
        if query.series_uids is not None:
            conditions.append(Series.series_instance_uid.in_(query.series_uids))
        if query.modalities is not None:
            conditions.append(Series.modality.in_(query.modalities))
        return conditions

    def _instance_conditions(self, query: QidoQuery) -> list[ColumnElement[bool]]:
        conditions = self._series_conditions(query)
        if query.sop_uids is not None:
            conditions.append(Instance.sop_instance_uid.in_(query.sop_uids))
        if query.sop_class_uids is not None:
            conditions.append(Instance.sop_class_uid.in_(query.sop_class_uids))
        return conditions

    # Produced objects in scope -------------------------------------------------------
    def _produced(self, query: QidoQuery) -> list[ProducedFile]:
        only_uids = query.study_uids is not None and not any(
            v is not None
            for v in (
                query.study_date,
                query.modalities_in_study,
                query.accession_number_hash,
                query.patient_id_hash,
            )
        )
        studies: list[str] | None = None
        if only_uids:
            studies = query.study_uids
        elif query.has_study_conditions:
            with self.engine.connect() as connection:
                studies = list(
                    connection.execute(
                        select(Study.study_instance_uid).where(*self._study_conditions(query))
                    ).scalars()
                )
        files = produced_files(self.holdings.results_dir, studies)
        received = self._received_sops([f.sop_instance_uid for f in files])
        out = []
        for produced in files:
            if produced.sop_instance_uid in received:
                continue  # sent back to this gateway too: listed once, as received
            if query.series_uids is not None and produced.series_instance_uid not in (
                query.series_uids
            ):
                continue
            if query.sop_uids is not None and produced.sop_instance_uid not in query.sop_uids:
                continue
            if query.sop_class_uids is not None and (
                produced.sop_class_uid not in query.sop_class_uids
            ):
                continue
            if query.modalities is not None and (
                self.headers.modality(produced.path) not in query.modalities
            ):
                continue
            out.append(produced)
        return out

    def _received_sops(self, sop_uids: list[str]) -> set[str]:
        if not sop_uids:
            return set()
        with self.engine.connect() as connection:
            return set(
                connection.execute(
                    select(Instance.sop_instance_uid).where(Instance.sop_instance_uid.in_(sop_uids))
                ).scalars()
            )

    # Paging over received then produced ----------------------------------------------
    def _page(
        self,
        query: QidoQuery,
        statement: Select[Any],
        to_match: Callable[[Any], Match],
        produced: Callable[[], list[Match]],
    ) -> tuple[list[Match], bool]:
        with self.engine.connect() as connection:
            rows = connection.execute(statement.offset(query.offset).limit(query.limit + 1)).all()
            if len(rows) > query.limit:
                return [to_match(r) for r in rows[: query.limit]], True
            if rows:
                received_total = query.offset + len(rows)
            else:
                received_total = connection.execute(
                    select(func.count()).select_from(statement.order_by(None).subquery())
                ).scalar_one()
        page = [to_match(r) for r in rows]
        extra = produced()
        start = max(0, query.offset - received_total)
        room = query.limit - len(page)
        page += extra[start : start + room]
        return page, len(extra) - start > room

    def search(self, query: QidoQuery) -> QidoResult:
        if query.level is Level.STUDY:
            matches, more = self._studies(query)
            answers = [self._study_json(m) for m in matches]
        elif query.level is Level.SERIES:
            matches, more = self._series(query)
            answers = [self._series_json(m, query) for m in matches]
        else:
            matches, more = self._instances(query)
            answers = [self._instance_json(m, query) for m in matches]
        # what was asked for is added; the computed attributes stay as computed
        merged = [{**self._included(m, query), **a} for a, m in zip(answers, matches, strict=True)]
        return QidoResult(merged, more, query.warnings)

    def _studies(self, query: QidoQuery) -> tuple[list[Match], bool]:
        first_file = (
            select(Instance.file_path)
            .join(Series, Instance.series_id == Series.id)
            .where(Series.study_id == Study.id)
            .order_by(Instance.id)
            .limit(1)
            .scalar_subquery()
        )
        statement = (
            select(Study.study_instance_uid, first_file)
            .where(*self._study_conditions(query))
            .order_by(Study.id)
        )
        spool = self.holdings.spool_dir
        return self._page(
            query, statement, lambda r: Match(r[0], None, None, spool / str(r[1])), list
        )

    def _series(self, query: QidoQuery) -> tuple[list[Match], bool]:
        first_file = (
            select(Instance.file_path)
            .where(Instance.series_id == Series.id)
            .order_by(Instance.id)
            .limit(1)
            .scalar_subquery()
        )
        statement = (
            select(
                Study.study_instance_uid,
                Series.series_instance_uid,
                Series.modality,
                Series.instance_count,
                first_file,
            )
            .join(Study, Series.study_id == Study.id)
            .where(*self._series_conditions(query))
            .order_by(Series.id)
        )
        spool = self.holdings.spool_dir

        def produced() -> list[Match]:
            grouped: dict[tuple[str, str], list[ProducedFile]] = {}
            for f in self._produced(query):
                grouped.setdefault((f.study_instance_uid, f.series_instance_uid), []).append(f)
            return [
                Match(s, se, None, fs[0].path, self.headers.modality(fs[0].path), count=len(fs))
                for (s, se), fs in grouped.items()
            ]

        return self._page(
            query,
            statement,
            lambda r: Match(r[0], r[1], None, spool / str(r[4]), r[2], count=r[3]),
            produced,
        )

    def _instances(self, query: QidoQuery) -> tuple[list[Match], bool]:
        statement = (
            select(
                Study.study_instance_uid,
                Series.series_instance_uid,
                Instance.sop_instance_uid,
                Instance.sop_class_uid,
                Instance.file_path,
                Series.modality,
            )
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
            .where(*self._instance_conditions(query))
            .order_by(Series.id, Instance.id)
        )
        spool = self.holdings.spool_dir

        def produced() -> list[Match]:
            return [
                Match(
                    f.study_instance_uid,
                    f.series_instance_uid,
                    f.sop_instance_uid,
                    f.path,
                    self.headers.modality(f.path),
                    f.sop_class_uid,
                )
                for f in self._produced(query)
            ]

        return self._page(
            query,
            statement,
            lambda r: Match(r[0], r[1], r[2], spool / str(r[4]), r[5], r[3]),
            produced,
        )

    # Answers -------------------------------------------------------------------------
    def _header_json(self, path: Path, tags: Sequence[int]) -> dict[str, Any]:
        header = self.headers.get(path)
        return {} if header is None else dataset_json(header.dataset, tags)

    def _study_url(self, study: str) -> str:
        return f"{self.base_url}/studies/{study}"

    def _study_json(self, match: Match) -> dict[str, Any]:
        answer = self._header_json(match.path, STUDY_ATTRIBUTES)
        with self.engine.connect() as connection:
            series = connection.execute(
                select(Series.modality, Series.instance_count)
                .join(Study, Series.study_id == Study.id)
                .where(Study.study_instance_uid == match.study_uid)
            ).all()
        modalities = {str(m) for m, _ in series if m}
        series_count, instance_count = len(series), sum(int(c) for _, c in series)
        produced = produced_files(self.holdings.results_dir, [match.study_uid])
        received = self._received_sops([f.sop_instance_uid for f in produced])
        produced = [f for f in produced if f.sop_instance_uid not in received]
        modalities |= {m for f in produced if (m := self.headers.modality(f.path))}
        series_count += len({f.series_instance_uid for f in produced})
        instance_count += len(produced)
        answer.update(
            {
                "0020000D": json_value("UI", match.study_uid),
                "00080056": json_value("CS", "ONLINE"),
                "00080061": json_value("CS", *sorted(modalities)),
                "00081190": json_value("UR", self._study_url(match.study_uid)),
                "00201206": json_value("IS", series_count),
                "00201208": json_value("IS", instance_count),
            }
        )
        return answer

    def _series_json(self, match: Match, query: QidoQuery) -> dict[str, Any]:
        tags = SERIES_ATTRIBUTES + (STUDY_ATTRIBUTES if len(query.study_uids or []) != 1 else ())
        answer = self._header_json(match.path, tags)
        answer.update(
            {
                "0020000D": json_value("UI", match.study_uid),
                "0020000E": json_value("UI", match.series_uid),
                "00201209": json_value("IS", match.count or 0),
                "00081190": json_value(
                    "UR", f"{self._study_url(match.study_uid)}/series/{match.series_uid}"
                ),
            }
        )
        if match.modality:
            answer["00080060"] = json_value("CS", match.modality)
        return answer

    def _instance_json(self, match: Match, query: QidoQuery) -> dict[str, Any]:
        tags = INSTANCE_ATTRIBUTES + SERIES_ATTRIBUTES
        if len(query.study_uids or []) != 1:
            tags += STUDY_ATTRIBUTES
        answer = self._header_json(match.path, tags)
        header = self.headers.get(match.path)
        url = f"{self._study_url(match.study_uid)}/series/{match.series_uid}"
        answer.update(
            {
                "0020000D": json_value("UI", match.study_uid),
                "0020000E": json_value("UI", match.series_uid),
                "00080018": json_value("UI", match.sop_uid),
                "00080056": json_value("CS", "ONLINE"),
                "00081190": json_value("UR", f"{url}/instances/{match.sop_uid}"),
            }
        )
        if match.sop_class_uid:
            answer["00080016"] = json_value("UI", match.sop_class_uid)
        if header is not None:
            answer["00083002"] = json_value("UI", header.transfer_syntax_uid)
        return answer

    def _included(self, match: Match, query: QidoQuery) -> dict[str, Any]:
        if not query.include:
            return {}
        header = self.headers.get(match.path)
        if header is None:
            return {}
        tags = None if query.include == "all" else sorted(query.include)
        included = dataset_json(header.dataset, tags)
        return included
