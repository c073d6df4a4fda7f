"""Results into the delivery queue: files written durably first, then their delivery rows and
audit events in one transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Engine

from gateway.audit import AuditKind, audit_row, record
from gateway.database import writer_queue
from gateway.delivery.ledger import queue_deliveries
from gateway.dicom.spool import Spool
from gateway.results.build import ResultObject, StoredResult, store_results
from gateway.settings import GatewaySettings


def publish_results(
    settings: GatewaySettings,
    engine: Engine,
    objects: Sequence[ResultObject],
    destinations: Sequence[str] | None = None,
) -> list[StoredResult]:
    """Store the objects and queue each for every destination (default: all configured)."""
    spool = Spool(
        settings.results_dir,
        min_free_bytes=settings.storage.min_free_mb * 1024 * 1024,
        fsync=settings.storage.fsync,
    )
    stored = store_results(objects, settings.results_dir, spool)
    names = list(settings.destination_names if destinations is None else destinations)
    with writer_queue(engine), engine.begin() as connection:
        for result in stored:
            record(
                connection,
                audit_row(
                    AuditKind.RESULTS_STORED,
                    actor="results",
                    study_instance_uid=result.study_instance_uid,
                    sop_instance_uid=result.sop_instance_uid,
                    detail={"kind": result.kind, "series": result.series_instance_uid},
                ),
            )
        queue_deliveries(connection, stored, names)
    return stored
