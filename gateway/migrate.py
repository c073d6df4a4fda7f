"""Run the Alembic migrations in `migrations/` against the configured database."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from gateway.settings import GatewaySettings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(settings: GatewaySettings, engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["settings"] = settings
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade(
    settings: GatewaySettings, revision: str = "head", engine: Engine | None = None
) -> None:
    command.upgrade(alembic_config(settings, engine), revision)


def downgrade(settings: GatewaySettings, revision: str, engine: Engine | None = None) -> None:
    command.downgrade(alembic_config(settings, engine), revision)
