"""`pacs-gateway pull`: a retrospective run from the command line. By default the run is
carried out in this process, printing each study and each finished batch (C-MOVE needs the
gateway's listener running: the PACS sends there); `--queue` leaves it to the running
gateway; `--dry-run` lists what would be fetched and which rule would take it."""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from typing import TextIO

from pydantic import ValidationError
from sqlalchemy import Engine

from gateway.database import make_engine
from gateway.pull.criteria import PullCriteria
from gateway.pull.errors import SourceError
from gateway.pull.ledger import create_run
from gateway.pull.retrospective import PlannedStudy, carry_out_run, dry_run
from gateway.settings import GatewaySettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--accession", action="append", default=[], metavar="NUMBER", help="(repeatable)"
    )
    parser.add_argument(
        "--study", action="append", default=[], metavar="UID", help="Study Instance UID"
    )
    parser.add_argument("--from", dest="date_from", metavar="DATE", help="YYYYMMDD or YYYY-MM-DD")
    parser.add_argument("--to", dest="date_to", metavar="DATE", help="YYYYMMDD or YYYY-MM-DD")
    parser.add_argument("--modality", help="with a date range, e.g. CT")
    parser.add_argument(
        "--dry-run", action="store_true", help="list the studies and the rule for each"
    )
    parser.add_argument(
        "--queue", action="store_true", help="leave the run to the running gateway's puller"
    )
    parser.add_argument("--batch-size", type=int, help="studies per batch (pull.batch_size)")
    parser.add_argument("--user", default=os.environ.get("USER", "cli"), help="for the audit log")


def criteria_from(args: argparse.Namespace) -> PullCriteria:
    return PullCriteria(
        accession_numbers=[a for value in args.accession for a in value.split(",")],
        study_instance_uids=[u for value in args.study for u in value.split(",")],
        date_from=args.date_from,
        date_to=args.date_to,
        modality=args.modality,
    )


def print_plan(planned: list[PlannedStudy], out: TextIO) -> None:
    for item in planned:
        study = item.study
        take = f"rule {item.rule}" if item.rule else f"no rule ({item.reason})"
        held = f", {item.instances_held} held already" if item.instances_held else ""
        print(
            f"{study.study_instance_uid}  {study.study_date or '-':8s}  "
            f"{'/'.join(study.modalities) or '-':6s}  {len(item.series)} series, "
            f"{study.instance_count if study.instance_count is not None else '?'} instances"
            f"{held}  -> {take}",
            file=out,
        )
    routed = sum(1 for p in planned if p.rule)
    print(f"{len(planned)} studies would be fetched; {routed} would be routed", file=out)


def run_pull_command(args: argparse.Namespace, settings: GatewaySettings) -> int:
    try:
        criteria = criteria_from(args)
    except ValidationError as exc:
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        print(f"pacs-gateway pull: {problems}", file=sys.stderr)
        return 2
    source = settings.pull.source
    if source is None:
        print(
            "pacs-gateway pull: expected a source archive in the settings (pull.source), "
            "found none",
            file=sys.stderr,
        )
        return 2
    from gateway.service import DatabaseNotMigrated, check_schema_current

    engine = make_engine(settings)
    try:
        check_schema_current(settings, engine)
        if args.dry_run:
            print_plan(dry_run(settings, engine, criteria, actor=f"cli:{args.user}"), sys.stdout)
            return 0
        batch_size = args.batch_size or settings.pull.batch_size
        run_id = create_run(
            engine,
            criteria,
            transport=source.transport,
            batch_size=batch_size,
            requested_by=f"cli:{args.user}",
            started=not args.queue,
        )
        if args.queue:
            print(f"run {run_id} queued ({criteria.summary()}, {source.transport})")
            return 0
        return _carry_out(settings, engine, run_id, criteria)
    except (DatabaseNotMigrated, SourceError) as exc:
        print(f"pacs-gateway pull: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def _carry_out(
    settings: GatewaySettings, engine: Engine, run_id: int, criteria: PullCriteria
) -> int:
    batches: Counter[int] = Counter()
    failures: Counter[int] = Counter()
    last_batch = 0

    def on_study(batch: int, study_uid: str, pulled: bool, detail: str) -> None:
        nonlocal last_batch
        if last_batch and batch != last_batch:
            _batch_line(last_batch, batches, failures)
        last_batch = batch
        batches[batch] += 1
        failures[batch] += 0 if pulled else 1
        print(f"  batch {batch}: {study_uid} {'pulled' if pulled else 'FAILED'}: {detail}")

    print(f"run {run_id}: {criteria.summary()}")
    result = carry_out_run(settings, engine, run_id, criteria, on_study=on_study)
    if last_batch:
        _batch_line(last_batch, batches, failures)
    if result.error is not None:
        print(f"run {run_id} failed: {result.error}", file=sys.stderr)
        return 1
    print(f"run {run_id} done: {result.pulled} pulled, {result.failed} failed")
    return 0 if result.failed == 0 else 1


def _batch_line(batch: int, batches: Counter[int], failures: Counter[int]) -> None:
    done = batches[batch]
    print(f"batch {batch} done: {done - failures[batch]} pulled, {failures[batch]} failed")
