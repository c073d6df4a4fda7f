"""Changes to the `destinations` table from the admin UI, each audited with the user.

Secrets (a STOW password or token) are stored as given but never rendered back, logged or
put in an audit event: the form leaves them blank, and blank keeps the stored one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, insert, select, update
from werkzeug.datastructures import MultiDict

from gateway.audit import AuditKind, audit_row, record, utcnow
from gateway.database import writer_queue
from gateway.delivery.config import Destination
from gateway.delivery.registry import (
    SECRET_FIELDS,
    build_destination,
    describe_errors,
    destination_config,
)
from gateway.models import DestinationRecord
from gateway.results.forms import ResultForm

KINDS = {"dicom": "DICOM C-STORE", "dicomweb": "DICOMweb STOW-RS"}
FORM_TITLES = {
    ResultForm.SEG_SR.value: "SEG + SR (OHIF, 3D Slicer, newer PACS viewers)",
    ResultForm.PRESENTATION_STATE.value: "Presentation state on the source images (most viewers)",
    ResultForm.SECONDARY_CAPTURE.value: "Secondary capture images, outlines burned in (any viewer)",
    ResultForm.KEY_OBJECTS.value: "Key object selection of the key images",
}


class DestinationEditError(ValueError):
    """The destination was not saved; the message says what was expected and found."""


def _text(form: Mapping[str, str], key: str) -> str | None:
    value = (form.get(key) or "").strip()
    return value or None


def form_config(
    kind: str, form: MultiDict[str, str], stored: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The `config` of a destination from the submitted form (and the stored config, whose
    secrets a blank secret field keeps). No form ticked is an error, not the default: the
    admin unticked everything."""
    forms = form.getlist("forms")
    if kind == "dicom":
        ca_file = _text(form, "tls_ca_file")
        return {
            "forms": forms,
            "ae_title": (form.get("ae_title") or "").strip(),
            "host": (form.get("host") or "").strip(),
            "port": (form.get("port") or "").strip(),
            "calling_ae_title": _text(form, "calling_ae_title"),
            "tls": None
            if ca_file is None
            else {
                "ca_file": ca_file,
                "cert_file": _text(form, "tls_cert_file"),
                "key_file": _text(form, "tls_key_file"),
                "check_hostname": form.get("tls_check_hostname") == "on",
            },
        }
    if kind == "dicomweb":
        config: dict[str, Any] = {
            "forms": forms,
            "url": (form.get("url") or "").strip(),
            "username": _text(form, "username"),
            "ca_file": _text(form, "ca_file"),
        }
        for field in SECRET_FIELDS:
            given = form.get(field) or ""
            if given:
                config[field] = given
            elif form.get(f"clear_{field}") == "on" or stored is None:
                config[field] = None
            else:
                config[field] = stored.get(field)
        return config
    raise DestinationEditError(f"kind: expected one of {sorted(KINDS)}, found {kind!r}")


def validate_destination(name: str, kind: str, config: dict[str, Any]) -> Destination:
    if kind not in KINDS:
        raise DestinationEditError(f"kind: expected one of {sorted(KINDS)}, found {kind!r}")
    try:
        return build_destination(name, kind, config)
    except ValidationError as exc:
        raise DestinationEditError(describe_errors(exc)) from exc


def _changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What changed, for the audit log: values of ordinary fields, only 'set', 'replaced' or
    'removed' for secrets."""
    changed: dict[str, Any] = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if key in SECRET_FIELDS:
            changed[key] = "set" if old is None else ("removed" if new is None else "replaced")
        else:
            changed[key] = {"from": old, "to": new}
    return changed


def _public(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config for an audit event: secrets only as whether one is set."""
    return {k: (v is not None if k in SECRET_FIELDS else v) for k, v in config.items()}


def stored_config(engine: Engine, destination_id: int) -> dict[str, Any] | None:
    with engine.connect() as connection:
        config = connection.execute(
            select(DestinationRecord.config).where(DestinationRecord.id == destination_id)
        ).scalar()
    return None if config is None else dict(config)


def create_destination(
    engine: Engine, destination: Destination, *, enabled: bool, actor: str, address: str
) -> int:
    now = utcnow()
    config = destination_config(destination)
    with writer_queue(engine), engine.begin() as connection:
        taken = connection.execute(
            select(DestinationRecord.id).where(DestinationRecord.name == destination.name)
        ).first()
        if taken:
            raise DestinationEditError(
                f"name: expected a new destination name, found {destination.name!r} taken"
            )
        row_id = connection.execute(
            insert(DestinationRecord)
            .values(
                name=destination.name,
                kind=destination.kind,
                config=config,
                enabled=enabled,
                created_at=now,
                updated_at=now,
            )
            .returning(DestinationRecord.id)
        ).scalar_one()
        record(
            connection,
            audit_row(
                AuditKind.DESTINATION_CREATED,
                actor=actor,
                source_address=address,
                detail={
                    "destination": destination.name,
                    "kind": destination.kind,
                    "enabled": enabled,
                    "config": _public(config),
                },
                occurred_at=now,
            ),
        )
    return int(row_id)


def update_destination(
    engine: Engine, destination_id: int, destination: Destination, *, actor: str, address: str
) -> bool:
    """Store the new config; False when nothing changed."""
    now = utcnow()
    config = destination_config(destination)
    with writer_queue(engine), engine.begin() as connection:
        row = connection.execute(
            select(DestinationRecord.__table__).where(DestinationRecord.id == destination_id)
        ).one_or_none()
        if row is None:
            raise DestinationEditError(f"expected destination {destination_id}, found none")
        if row.name != destination.name or row.kind != destination.kind:
            raise DestinationEditError(
                f"expected name {row.name!r} and kind {row.kind!r} unchanged, found "
                f"{destination.name!r} and {destination.kind!r}"
            )
        changed = _changes(row.config, config)
        if not changed:
            return False
        connection.execute(
            update(DestinationRecord)
            .where(DestinationRecord.id == destination_id)
            .values(config=config, updated_at=now)
        )
        record(
            connection,
            audit_row(
                AuditKind.DESTINATION_UPDATED,
                actor=actor,
                source_address=address,
                detail={"destination": row.name, "changed": changed},
                occurred_at=now,
            ),
        )
    return True


def set_enabled(
    engine: Engine, destination_id: int, enabled: bool, *, actor: str, address: str
) -> str:
    """Enable or disable; returns the destination's name."""
    now = utcnow()
    with writer_queue(engine), engine.begin() as connection:
        name = connection.execute(
            select(DestinationRecord.name).where(DestinationRecord.id == destination_id)
        ).scalar()
        if name is None:
            raise DestinationEditError(f"expected destination {destination_id}, found none")
        connection.execute(
            update(DestinationRecord)
            .where(DestinationRecord.id == destination_id)
            .values(enabled=enabled, updated_at=now)
        )
        record(
            connection,
            audit_row(
                AuditKind.DESTINATION_ENABLED if enabled else AuditKind.DESTINATION_DISABLED,
                actor=actor,
                source_address=address,
                detail={"destination": name},
                occurred_at=now,
            ),
        )
    return str(name)
