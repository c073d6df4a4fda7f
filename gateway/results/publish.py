"""Results into the delivery queue: files written durably first, then their delivery rows and
audit events in one transaction. Each destination gets the objects of the forms it takes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Engine

from gateway.audit import AuditKind, audit_row, record
from gateway.database import writer_queue
from gateway.delivery.ledger import queue_deliveries
from gateway.delivery.registry import destination_forms, destination_names, seed_from_settings
from gateway.dicom.spool import Spool
from gateway.results.build import ResultObject, StoredResult, store_results
from gateway.results.forms import ResultForm, kinds_of
from gateway.settings import GatewaySettings


def publish_results(
    settings: GatewaySettings,
    engine: Engine,
    objects: Sequence[ResultObject],
    destinations: Sequence[str] | None = None,
) -> list[StoredResult]:
    """Store the objects and queue each for every destination (default: every enabled one of
    the database, which the settings' destinations are seeded into first)."""
    stored = write_results(settings, objects)
    seed_from_settings(engine, settings.destinations)
    with writer_queue(engine), engine.begin() as connection:
        names = list(destination_names(connection) if destinations is None else destinations)
        record_and_queue(connection, stored, names)
    return stored


def write_results(settings: GatewaySettings, objects: Sequence[ResultObject]) -> list[StoredResult]:
    """The files, durably, under settings.results_dir (no database change)."""
    spool = Spool(
        settings.results_dir,
        min_free_bytes=settings.storage.min_free_mb * 1024 * 1024,
        fsync=settings.storage.fsync,
    )
    return store_results(objects, settings.results_dir, spool)


def record_and_queue(
    connection: Connection, stored: Sequence[StoredResult], destinations: Sequence[str]
) -> None:
    """Audit the stored objects and queue to each destination those of the forms it takes, in
    the caller's transaction."""
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
    for destination, forms in destination_forms(connection, destinations).items():
        kinds = kinds_of(forms)
        queue_deliveries(connection, [r for r in stored if r.kind in kinds], [destination])


def forms_needed(connection: Connection, destinations: Sequence[str]) -> set[ResultForm]:
    """The forms to build: SEG and SR always (the gateway's own record of the run, shown on
    the study page), and every other form one of the destinations takes."""
    chosen = destination_forms(connection, destinations).values()
    return {ResultForm.SEG_SR, *(form for forms in chosen for form in forms)}
