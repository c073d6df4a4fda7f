"""`pacs-gateway retention [--days N] [--dry-run]`: one retention pass now, or the list of
what it would purge and why the other studies stay (counts per reason)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from gateway.settings import GatewaySettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--days",
        type=int,
        help="retention period in days (default: setting storage.retention_days)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would be purged; change nothing"
    )


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def run_retention_command(
    args: argparse.Namespace, settings: GatewaySettings, out: TextIO = sys.stdout
) -> int:
    from gateway.database import make_engine
    from gateway.retention.purge import RetentionPass
    from gateway.service import DatabaseNotMigrated, check_schema_current

    if args.days is not None and args.days < 0:
        print(f"pacs-gateway: expected --days >= 0, found {args.days}", file=sys.stderr)
        return 2
    if args.days is None and settings.storage.retention_days is None:
        print(
            "pacs-gateway: expected --days or the setting storage.retention_days, found "
            "neither (retention is off)",
            file=sys.stderr,
        )
        return 2
    engine = make_engine(settings)
    try:
        check_schema_current(settings, engine)
        retention = RetentionPass(
            settings, engine, days=args.days, actor=f"cli:{os.environ.get('USER', 'unknown')}"
        )
        if args.dry_run:
            plan = retention.plan()
            report = None
        else:
            report = retention.run()
            plan = report.plan
    except DatabaseNotMigrated as exc:
        print(f"pacs-gateway: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    files = sum(c.instances for c in plan.to_purge)
    size = sum(c.bytes for c in plan.to_purge)
    verb = "would purge" if report is None else "purge"
    print(
        f"retention {plan.days} days (last received before {plan.cutoff:%Y-%m-%d %H:%M} UTC): "
        f"{verb} {len(plan.to_purge)} studies, {files} files, {_megabytes(size)}",
        file=out,
    )
    for candidate in plan.to_purge:
        print(
            f"  {verb} {candidate.study_instance_uid}  last received "
            f"{candidate.last_received_at:%Y-%m-%d}  {candidate.instances} files  "
            f"{_megabytes(candidate.bytes)}",
            file=out,
        )
    kept = ", ".join(f"{reason} {count}" for reason, count in sorted(plan.kept.items()) if count)
    print(f"kept {sum(plan.kept.values())} studies: {kept or 'none'}", file=out)
    print(
        f"already purged: {plan.already_purged}; pending from an earlier pass: {plan.pending}",
        file=out,
    )
    if report is None:
        print("dry run: nothing changed", file=out)
        return 0
    print(
        f"purged {len(report.purged)} studies: removed {report.files_removed} files "
        f"({_megabytes(report.bytes_removed)}), {report.files_missing} already missing, "
        f"{report.changed_meanwhile} changed meanwhile and kept, {report.errors} errors",
        file=out,
    )
    return 1 if report.errors else 0
