"""The `destinations` table: seeded from the settings, then owned by the admin UI.

Seeding only adds destinations whose name the table lacks, so an edit made in the database is
never overwritten by the settings file on the next start. Rows keep secrets (a STOW password
or token) as given; nothing here logs them or puts them in an audit event or error text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Connection, Engine, select

from gateway.audit import AuditKind, audit_row, record, utcnow
from gateway.database import insert_ignoring_duplicates, writer_queue
from gateway.delivery.config import Destination, DicomWebDestination
from gateway.models import DestinationRecord
from gateway.results.forms import DEFAULT_FORMS, ResultForm

SECRET_FIELDS = ("password", "token")
_ADAPTER: TypeAdapter[Destination] = TypeAdapter(Destination)


class InvalidStoredDestination(Exception):
    """A destination in the database does not validate; the message names it and the error."""


@dataclass(frozen=True)
class StoredDestination:
    """A row of the table; `destination` is None when its config does not validate (then
    `problem` says why)."""

    id: int
    name: str
    kind: str
    enabled: bool
    destination: Destination | None
    problem: str | None
    updated_at: datetime


def describe_errors(exc: ValidationError) -> str:
    """A pydantic error as 'field: message (found value)', never echoing a secret."""
    problems = []
    for error in exc.errors():
        loc = [str(p) for p in error["loc"] if str(p) not in ("dicom", "dicomweb")]
        where = ".".join(loc) or "destination"
        found = error.get("input")
        secret = any(part in SECRET_FIELDS for part in loc)
        shown = "" if secret or isinstance(found, dict) or found is None else f" (found {found!r})"
        problems.append(f"{where}: {error['msg']}{shown}")
    return "; ".join(problems)


def destination_config(destination: Destination) -> dict[str, Any]:
    """What the `config` column holds: every field but name and kind, secrets in clear."""
    config = destination.model_dump(mode="json", exclude={"name", "kind"})
    if isinstance(destination, DicomWebDestination):
        for field in SECRET_FIELDS:
            secret = getattr(destination, field)
            config[field] = None if secret is None else secret.get_secret_value()
    return config


def build_destination(name: str, kind: str, config: dict[str, Any]) -> Destination:
    """Validate a destination; raises pydantic's ValidationError."""
    return _ADAPTER.validate_python({**config, "name": name, "kind": kind})


def seed_destinations(connection: Connection, destinations: Sequence[Destination]) -> int:
    """Insert the destinations whose name is not in the table yet (enabled); return how many
    were inserted. Runs in the caller's transaction."""
    existing = set(connection.execute(select(DestinationRecord.name)).scalars())
    now = utcnow()
    inserted = 0
    for destination in destinations:
        if destination.name in existing:
            continue
        row_id = connection.execute(
            insert_ignoring_duplicates(connection, DestinationRecord, ["name"])
            .values(
                name=destination.name,
                kind=destination.kind,
                config=destination_config(destination),
                enabled=True,
                created_at=now,
                updated_at=now,
            )
            .returning(DestinationRecord.id)
        ).scalar()
        if row_id is None:
            continue  # another process seeded it between our read and this insert
        inserted += 1
        record(
            connection,
            audit_row(
                AuditKind.DESTINATION_SEEDED,
                actor="settings",
                detail={"destination": destination.name, "kind": destination.kind},
                occurred_at=now,
            ),
        )
    return inserted


def seed_from_settings(engine: Engine, destinations: Sequence[Destination]) -> int:
    """seed_destinations in a transaction of its own (idempotent)."""
    if not destinations:
        return 0
    with writer_queue(engine), engine.begin() as connection:
        return seed_destinations(connection, destinations)


def _stored(row: Any) -> StoredDestination:
    try:
        destination: Destination | None = build_destination(row.name, row.kind, row.config)
        problem = None
    except ValidationError as exc:
        destination = None
        problem = (
            f"destination {row.name!r}: expected a valid destination, found {describe_errors(exc)}"
        )
    return StoredDestination(
        id=row.id,
        name=row.name,
        kind=row.kind,
        enabled=row.enabled,
        destination=destination,
        problem=problem,
        updated_at=row.updated_at,
    )


def stored_destinations(connection: Connection) -> list[StoredDestination]:
    """Every row by name, disabled and invalid ones included."""
    rows = connection.execute(
        select(DestinationRecord.__table__).order_by(DestinationRecord.name)
    ).all()
    return [_stored(row) for row in rows]


def load_destinations(
    connection: Connection, *, include_disabled: bool = False
) -> list[Destination]:
    """The destinations by name, enabled ones only unless `include_disabled`.

    Raises InvalidStoredDestination if one of them does not validate.
    """
    loaded = []
    for stored in stored_destinations(connection):
        if not (stored.enabled or include_disabled):
            continue
        if stored.destination is None:
            raise InvalidStoredDestination(stored.problem)
        loaded.append(stored.destination)
    return loaded


def destination_by_name(connection: Connection, name: str) -> StoredDestination | None:
    row = connection.execute(
        select(DestinationRecord.__table__).where(DestinationRecord.name == name)
    ).one_or_none()
    return None if row is None else _stored(row)


def destination_names(connection: Connection, *, include_disabled: bool = False) -> list[str]:
    """Names by name order, enabled ones only unless `include_disabled` (no validation)."""
    query = select(DestinationRecord.name).order_by(DestinationRecord.name)
    if not include_disabled:
        query = query.where(DestinationRecord.enabled.is_(True))
    return list(connection.execute(query).scalars())


def destination_forms(connection: Connection, names: Iterable[str]) -> dict[str, list[ResultForm]]:
    """The result forms each named destination takes. A destination missing from the table or
    failing validation gets the default forms: its deliveries then fail with that reason, as
    they would without forms."""
    forms: dict[str, list[ResultForm]] = {}
    for name in names:
        stored = destination_by_name(connection, name)
        chosen = None if stored is None or stored.destination is None else stored.destination
        forms[name] = list(DEFAULT_FORMS) if chosen is None else list(chosen.forms)
    return forms
