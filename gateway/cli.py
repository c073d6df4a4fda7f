"""`pacs-gateway`: the one console script, with subcommands."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from gateway.settings import GatewaySettings, SettingsError, load_settings


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML config file")
    parser.add_argument("--data-dir", type=Path, help="spool and embedded database folder")
    parser.add_argument("--dicom-port", type=int, help="DICOM listener port")
    parser.add_argument("--http-port", type=int, help="web UI and DICOMweb port")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pacs-gateway", description="PACS-integrated AI gateway")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in (
        ("serve", "run the DICOM listener and study assembly"),
        ("migrate", "upgrade the database schema to the newest revision"),
        ("run", "migrate, then run every part on this machine with embedded defaults"),
        ("check-config", "validate the settings and print them"),
        ("triton", "run the bundled Triton Inference Server on triton_models/ until stopped"),
        ("worker", "run a Celery worker that processes jobs"),
        ("prefetch", "decode and preprocess series as they arrive (serve runs it beside itself)"),
        ("jobs", "list the most recent jobs"),
    ):
        _common_options(commands.add_parser(name, help=text, description=text))
    commands.choices["migrate"].add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="migrate nothing: wait until another process (the migration job) brought the "
        "schema to this release's revision (exit 0), at most SECONDS (exit 2)",
    )
    text = "send a phantom study through the running gateway and check the results"
    selftest = commands.add_parser("selftest", help=text, description=text)
    _common_options(selftest)
    selftest.add_argument(
        "--timeout",
        type=float,
        help="seconds to wait for the results (default: quiet period + 600)",
    )
    selftest.add_argument(
        "--modality",
        choices=("CT", "DX"),
        default="CT",
        help="CT: a chest CT phantom (lung_nodules: SEG and SR); DX: a chest radiograph "
        "(chest_xray_nodule: SR); a rule must route it",
    )
    for name, text in (
        ("retry-job", "queue a failed or cancelled job again"),
        ("cancel-job", "cancel an unfinished job"),
    ):
        sub = commands.add_parser(name, help=text, description=text)
        _common_options(sub)
        sub.add_argument("job_id", type=int)
        sub.add_argument("--user", default=os.environ.get("USER", "cli"), help="for the audit log")
    text = "list the registered pipelines and whether Triton serves their models; "
    text += "'pipelines check FILE' validates a pipeline file"
    pipelines = commands.add_parser("pipelines", help=text, description=text)
    _common_options(pipelines)
    pipelines.add_argument("action", nargs="?", choices=["check"], help="check a file")
    pipelines.add_argument("file", nargs="?", type=Path, help="pipeline file (TOML)")
    text = "pull studies from the source archive (pull.source): by accession number, Study "
    text += "Instance UID or date range; --dry-run lists them and the rule for each"
    pull = commands.add_parser("pull", help=text, description=text)
    _common_options(pull)
    from gateway.pull.cli import add_arguments as add_pull_arguments

    add_pull_arguments(pull)
    text = "purge the spool files of studies past the retention period whose jobs ended and "
    text += "results were delivered (rows and audit stay); --dry-run lists them"
    retention = commands.add_parser("retention", help=text, description=text)
    _common_options(retention)
    from gateway.retention.cli import add_arguments as add_retention_arguments

    add_retention_arguments(retention)
    text = "run the admin web UI (binds web.host, default 127.0.0.1, on --http-port)"
    web = commands.add_parser("web", help=text, description=text)
    _common_options(web)
    web.add_argument("--host", help="address to bind (default: setting web.host)")
    text = "create an admin user of the web UI (password from a prompt or --password-stdin)"
    admin = commands.add_parser("create-admin", help=text, description=text)
    _common_options(admin)
    admin.add_argument("username")
    admin.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    return parser


def _create_admin(args: argparse.Namespace, settings: GatewaySettings) -> int:
    import getpass

    from gateway.database import make_engine
    from gateway.service import DatabaseNotMigrated, check_schema_current
    from gateway.web.users import Role, UserError, create_user

    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            print("pacs-gateway: expected the same password twice, found two", file=sys.stderr)
            return 1
    engine = make_engine(settings)
    try:
        check_schema_current(settings, engine)
        create_user(
            engine,
            settings.web,
            args.username,
            password,
            Role.ADMIN,
            actor=f"cli:{os.environ.get('USER', 'unknown')}",
        )
    except (UserError, DatabaseNotMigrated) as exc:
        print(f"pacs-gateway: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"admin {args.username} created")
    return 0


def _wait_for_schema(settings: GatewaySettings, timeout_s: float) -> int:
    """Kubernetes init containers: wait, never migrate, so pods cannot race on DDL."""
    import time

    from sqlalchemy.exc import OperationalError

    from gateway.database import make_engine
    from gateway.service import DatabaseNotMigrated, check_schema_current

    engine = make_engine(settings)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                check_schema_current(settings, engine)
                return 0
            except (DatabaseNotMigrated, OperationalError) as exc:
                if time.monotonic() >= deadline:
                    found = str(exc).splitlines()[0]
                    print(f"pacs-gateway: waited {timeout_s:g} s: {found}", file=sys.stderr)
                    return 2
            time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))
    finally:
        engine.dispose()


def _run_web(args: argparse.Namespace, settings: GatewaySettings) -> int:
    from gateway.database import make_engine
    from gateway.service import DatabaseNotMigrated, check_schema_current
    from gateway.web.wsgi_server import serve_web

    engine = make_engine(settings)
    try:
        check_schema_current(settings, engine)
    except DatabaseNotMigrated as exc:
        print(f"pacs-gateway: {exc}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()  # each web server process opens its own after the fork
    serve_web(settings, args.host or settings.web.host)
    return 0


def _cli_args(args: argparse.Namespace) -> list[str]:
    """The common options again, for a child process."""
    out: list[str] = []
    for option, value in (
        ("--config", args.config),
        ("--data-dir", args.data_dir),
        ("--dicom-port", args.dicom_port),
        ("--http-port", args.http_port),
    ):
        if value is not None:
            out += [option, str(value)]
    return out


def _job_command(args: argparse.Namespace, settings: GatewaySettings) -> int:
    from gateway.database import make_engine
    from gateway.jobs.control import JobActionRefused, cancel_job, list_jobs, retry_job

    engine = make_engine(settings)
    try:
        if args.command == "jobs":
            for job in list_jobs(engine):
                print(
                    f"{job.id:6d}  {job.state.value:13s} attempts={job.attempts} "
                    f"rule={job.rule_name} study={job.study_instance_uid}"
                    + (f"  error: {job.last_error}" if job.last_error else "")
                )
            return 0
        action = retry_job if args.command == "retry-job" else cancel_job
        action(engine, args.job_id, args.user)
        print(f"job {args.job_id}: {args.command.removesuffix('-job')} done")
        return 0
    except JobActionRefused as exc:
        print(f"pacs-gateway: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def settings_from(args: argparse.Namespace) -> GatewaySettings:
    overrides: dict[str, Any] = {"data_dir": args.data_dir, "http_port": args.http_port}
    if args.dicom_port is not None:
        overrides["dicom"] = {"port": args.dicom_port}
    return load_settings(args.config, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from(args)
    except SettingsError as exc:
        print(f"pacs-gateway: {exc}", file=sys.stderr)
        return 2

    from gateway.logging_setup import configure_logging

    configure_logging(settings.log_level)
    if args.command == "check-config":
        print(settings.model_dump_json(indent=2))
        return 0
    if args.command == "triton":
        from workers.triton_server import run_triton_forever

        return run_triton_forever(settings.inference)
    if args.command in ("jobs", "retry-job", "cancel-job"):
        return _job_command(args, settings)
    if args.command == "pipelines":
        from gateway.pipelines.listing import check_file, list_pipelines

        if args.action == "check":
            if args.file is None:
                print("pacs-gateway: pipelines check: expected a FILE, found none", file=sys.stderr)
                return 2
            return check_file(args.file, sys.stdout)
        return list_pipelines(settings, sys.stdout)
    if args.command == "pull":
        from gateway.pull.cli import run_pull_command

        return run_pull_command(args, settings)
    if args.command == "retention":
        from gateway.retention.cli import run_retention_command

        return run_retention_command(args, settings)
    if args.command == "create-admin":
        return _create_admin(args, settings)
    if args.command == "web":
        return _run_web(args, settings)
    if args.command == "prefetch":
        from workers.prefetch.process import run_prefetcher_forever

        return run_prefetcher_forever(settings)
    if args.command == "worker":
        from workers.celery_app import run_worker

        run_worker(settings)
        return 0
    if args.command == "selftest":
        from gateway.selftest import run_selftest

        return run_selftest(settings, args.timeout, args.modality)
    if args.command == "migrate" and args.wait is not None:
        return _wait_for_schema(settings, args.wait)
    if args.command in ("migrate", "run"):
        from gateway import migrate

        migrate.upgrade(settings)
        if args.command == "migrate":
            return 0
    from gateway.service import DatabaseNotMigrated, serve

    try:
        if args.command == "run":
            from gateway.run_all import run_everything

            return run_everything(settings, _cli_args(args))
        from workers.prefetch.process import prefetching

        with prefetching(settings):  # its own process, if prefetch.enabled
            serve(settings)
    except DatabaseNotMigrated as exc:
        print(f"pacs-gateway: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
