"""Retrospective runs: the criteria become a list of studies on the source (found with
retries), fetched batch by batch through the normal path (stored like any received instance,
then assembly, routing, jobs), each marked pulled, or failed with the reason.

A dry run finds the studies and their series and says which routing rule would take each,
using the same rule evaluation as the router, without retrieving anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from sqlalchemy import Engine, func, select

from gateway.audit import AuditKind, record
from gateway.database import writer_queue
from gateway.models import Instance, Series, Study
from gateway.pull.criteria import PullCriteria
from gateway.pull.errors import SourceError
from gateway.pull.events import pull_audit_row, retry_auditor
from gateway.pull.fetch import StudyFetcher
from gateway.pull.ledger import (
    add_studies,
    claim_run,
    finish_run,
    has_studies,
    mark_failed,
    mark_pulled,
    pending_of_run,
    requeue_run,
)
from gateway.pull.matches import SeriesMatch, StudyMatch
from gateway.pull.retry import GaveUp, with_retries
from gateway.pull.source import SourceClient, source_client
from gateway.routing.rules import SeriesFacts, StudyFacts, evaluate_rule_on
from gateway.routing.seed import load_rules, seed_rules
from gateway.settings import GatewaySettings

LOGGER = logging.getLogger(__name__)


class TooManyStudies(SourceError):
    """The query lists more studies than `pull.max_studies`: narrow it."""


@dataclass(frozen=True)
class PlannedStudy:
    """A study a run would fetch, and what routing would do with it."""

    study: StudyMatch
    series: tuple[SeriesMatch, ...]
    rule: str | None  # the first enabled rule that would take it
    reason: str | None  # why no rule would (None when one does)
    instances_held: int  # of this study already stored in the gateway


def find_studies(
    client: SourceClient, criteria: PullCriteria, max_studies: int
) -> list[StudyMatch]:
    """The studies the criteria name on the source, each once, in the order found."""
    found: dict[str, StudyMatch] = {}
    for query in criteria.queries():
        for match in client.query.studies(query):
            found.setdefault(match.study_instance_uid, match)
            if len(found) > max_studies:
                raise TooManyStudies(
                    f"expected at most {max_studies} studies (pull.max_studies), found more: "
                    "narrow the query",
                    permanent=True,
                )
    return list(found.values())


def study_facts(study: StudyMatch, series: tuple[SeriesMatch, ...], calling_ae: str) -> StudyFacts:
    """Routing facts from the source's answers, as the router would load them once stored."""
    return StudyFacts(
        study_instance_uid=study.study_instance_uid,
        attributes={"study_description": study.study_description, "calling_ae": calling_ae},
        series=tuple(
            SeriesFacts(
                series_instance_uid=s.series_instance_uid,
                series_number=s.series_number,
                attributes={
                    "modality": s.modality,
                    "body_part_examined": s.body_part_examined,
                    "series_description": s.series_description,
                    "slice_thickness": None,  # not a series-level query key
                    "series_instance_count": s.instance_count,
                },
            )
            for s in series
        ),
    )


def _instances_held(engine: Engine, study_uid: str) -> int:
    with engine.connect() as connection:
        count = connection.execute(
            select(func.count(Instance.id))
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
            .where(Study.study_instance_uid == study_uid)
        ).scalar()
    return int(count or 0)


def dry_run(
    settings: GatewaySettings,
    engine: Engine,
    criteria: PullCriteria,
    *,
    actor: str,
    stop: threading.Event | None = None,
    retry: bool = True,
) -> list[PlannedStudy]:
    """What a run would fetch and which rule would take each study; nothing is retrieved.
    `retry` false: one attempt per query (a page waiting for the answer). Raises
    PullingOff, GaveUp (the source could not answer)."""
    client = source_client(settings, engine)
    pull = settings.pull if retry else settings.pull.model_copy(update={"max_attempts": 1})
    with writer_queue(engine), engine.begin() as connection:
        seed_rules(connection, settings.routing.rules)  # as serve does: the table is the truth
        rules = [r for r in load_rules(connection) if r.enabled]
    studies, _ = with_retries(
        lambda: find_studies(client, criteria, pull.max_studies), pull, stop=stop
    )
    planned = []
    for study in studies:
        found, _ = with_retries(
            partial(client.query.series, study.study_instance_uid), pull, stop=stop
        )
        series = tuple(found)
        facts = study_facts(study, series, client.sender_label)
        rule, reasons = None, []
        for candidate in rules:
            evaluation = evaluate_rule_on(facts, candidate)
            if evaluation.matched:
                rule = candidate.name
                break
            reasons.append(f"rule {candidate.name!r}: {evaluation.reason}")
        reason = None if rule else ("; ".join(reasons) or "no enabled routing rules")
        planned.append(
            PlannedStudy(
                study, series, rule, reason, _instances_held(engine, study.study_instance_uid)
            )
        )
    with writer_queue(engine), engine.begin() as connection:
        record(
            connection,
            pull_audit_row(
                AuditKind.PULL_DRY_RUN,
                actor=actor,
                detail={
                    "criteria": criteria.summary(),
                    "studies": len(planned),
                    "routed": sum(1 for p in planned if p.rule),
                    "transport": client.transport,
                },
            ),
        )
    return planned


@dataclass(frozen=True)
class RunResult:
    run_id: int
    studies: int
    pulled: int
    failed: int
    error: str | None
    stopped: bool = False


OnStudy = Callable[[int, str, bool, str], None]
"""on_study(batch, Study Instance UID, pulled, detail): progress for a caller (the CLI)."""


def _find_and_add(
    settings: GatewaySettings,
    engine: Engine,
    client: SourceClient,
    run_id: int,
    criteria: PullCriteria | None,
    stop: threading.Event | None,
) -> None:
    if has_studies(engine, run_id):
        return  # a run taken up again: its studies were found before
    if criteria is None:
        raise SourceError("expected the run's criteria, found them already resolved and gone")
    pull = settings.pull
    audit = retry_auditor(engine, pull.max_attempts, client.transport, step="find", run_id=run_id)
    studies, _ = with_retries(
        lambda: find_studies(client, criteria, pull.max_studies), pull, stop=stop, on_retry=audit
    )
    add_studies(engine, run_id, criteria, [s.study_instance_uid for s in studies], pull.batch_size)


def execute_run(
    settings: GatewaySettings,
    engine: Engine,
    run_id: int | None = None,
    *,
    stop: threading.Event | None = None,
    on_study: OnStudy | None = None,
) -> RunResult | None:
    """Claim a queued run (`run_id`, or the oldest) and carry it out; None if none queued."""
    claimed = claim_run(engine, run_id)
    if claimed is None:
        return None
    return carry_out_run(settings, engine, *claimed, stop=stop, on_study=on_study)


def carry_out_run(
    settings: GatewaySettings,
    engine: Engine,
    run_id: int,
    criteria: PullCriteria | None,
    *,
    stop: threading.Event | None = None,
    on_study: OnStudy | None = None,
) -> RunResult:
    """Find the run's studies (unless found before), then fetch them batch by batch.
    Stopped midway, the run is queued again and resumes with its studies not yet tried."""
    try:
        client = source_client(settings, engine)
        _find_and_add(settings, engine, client, run_id, criteria, stop)
    except Exception as exc:
        if stop is not None and stop.is_set():
            requeue_run(engine, run_id)
            return RunResult(run_id, 0, 0, 0, None, stopped=True)
        reason = exc.reason if isinstance(exc, SourceError) else f"{type(exc).__name__}: {exc}"
        LOGGER.warning("pull run %d failed: %s", run_id, reason)
        finish_run(engine, run_id, error=reason)
        return RunResult(run_id, 0, 0, 0, reason)
    pending = pending_of_run(engine, run_id)
    LOGGER.info("pull run %d: %d studies to fetch, %s", run_id, len(pending), client.transport)
    fetcher = StudyFetcher(settings, engine, client, stop)
    pulled = failed = 0
    for row_id, batch, study_uid in pending:
        if stop is not None and stop.is_set():
            requeue_run(engine, run_id)
            return RunResult(run_id, len(pending), pulled, failed, None, stopped=True)
        try:
            fetched = fetcher.fetch(study_uid)
        except GaveUp as exc:
            if stop is not None and stop.is_set():  # not the source's fault: resume later
                requeue_run(engine, run_id)
                return RunResult(run_id, len(pending), pulled, failed, None, stopped=True)
            failed += 1
            LOGGER.warning("pull run %d: study %s failed: %s", run_id, study_uid, exc.reason)
            mark_failed(
                engine, row_id, reason=exc.reason, attempts=exc.attempts, transport=client.transport
            )
            if on_study is not None:
                on_study(batch, study_uid, False, exc.reason)
            continue
        pulled += 1
        mark_pulled(
            engine,
            row_id,
            listed=fetched.listed,
            attempts=fetched.attempts,
            retrieved=fetched.retrieved,
            transport=client.transport,
        )
        if on_study is not None:
            detail = f"{fetched.listed} instances" + ("" if fetched.retrieved else ", already held")
            on_study(batch, study_uid, True, detail)
    finish_run(engine, run_id)
    return RunResult(run_id, len(pending), pulled, failed, None)
