"""`pacs-gateway`: the one console script, with subcommands."""

from __future__ import annotations

import argparse
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
    ):
        _common_options(commands.add_parser(name, help=text, description=text))
    return parser


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
    if args.command in ("migrate", "run"):
        from gateway import migrate

        migrate.upgrade(settings)
        if args.command == "migrate":
            return 0
    from gateway.service import DatabaseNotMigrated, serve

    try:
        serve(settings)
    except DatabaseNotMigrated as exc:
        print(f"pacs-gateway: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
