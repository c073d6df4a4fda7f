"""Logging: one format, and no third-party logger that prints DICOM identifiers."""

from __future__ import annotations

import logging

from gateway.dicom.listener import configure_pynetdicom_logging


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )
    configure_pynetdicom_logging()
    # SQLAlchemy would echo statement parameters (UIDs, descriptions) at INFO.
    logging.getLogger("sqlalchemy").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
