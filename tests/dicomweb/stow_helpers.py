"""STOW-RS requests as raw HTTP (exact bytes, exact headers) and what they left behind."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import requests
from sqlalchemy import func, select

from gateway.models import AuditEvent, Instance
from tests.dicom_samples import encode
from tests.dicomweb.server import WebServer, multipart_body, parse_multipart


@dataclass
class StowReply:
    status: int
    dataset: pydicom.Dataset
    text: str
    headers: Any


def stow(
    web: WebServer,
    parts: list[bytes],
    secret: str,
    *,
    study: str | None = None,
    accept: str | None = None,
    content_type: str | None = None,
) -> StowReply:
    body, default_type = multipart_body(parts)
    headers = {"Content-Type": content_type or default_type, "Authorization": f"Bearer {secret}"}
    if accept:
        headers["Accept"] = accept
    url = f"{web.dicomweb}/studies" + (f"/{study}" if study else "")
    reply = requests.post(url, data=body, headers=headers, timeout=60)
    dataset = pydicom.Dataset()
    if reply.headers.get("Content-Type") == "application/dicom+json":
        dataset = pydicom.Dataset.from_json(reply.json())
    return StowReply(reply.status_code, dataset, reply.text, reply.headers)


def failures(dataset: pydicom.Dataset) -> list[tuple[str, int]]:
    return [
        (str(item.get("ReferencedSOPInstanceUID", "")), int(item.FailureReason))
        for item in dataset.get("FailedSOPSequence", [])
    ]


def referenced(dataset: pydicom.Dataset) -> list[str]:
    return [str(item.ReferencedSOPInstanceUID) for item in dataset.get("ReferencedSOPSequence", [])]


def stored_count(web: WebServer) -> int:
    with web.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(Instance)).scalar_one())


def spool_files(web: WebServer) -> list[Path]:
    root = web.settings.spool_dir
    return [Path(d) / n for d, _, names in os.walk(root) for n in names] if root.exists() else []


def staging_files(web: WebServer) -> list[Path]:
    root = web.settings.data_dir / "stow-incoming"
    return [Path(d) / n for d, _, names in os.walk(root) for n in names] if root.exists() else []


def audit_rows(web: WebServer, kind: str) -> list[AuditEvent]:
    with web.engine.connect() as connection:
        rows = connection.execute(
            select(AuditEvent.__table__).where(AuditEvent.kind == kind).order_by(AuditEvent.id)
        ).all()
    return list(rows)  # type: ignore[arg-type]


def request_events(web: WebServer, status: int, timeout_s: float = 5.0) -> list[Any]:
    """The dicomweb.request audit rows of requests answered `status` (written once the
    response has been sent, so waited for)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = [r for r in audit_rows(web, "dicomweb.request") if r.detail["status"] == status]
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def parse_multipart_reply(reply: requests.Response) -> list[tuple[str, bytes]]:
    return parse_multipart(reply)


def file_bytes(ds: pydicom.Dataset) -> bytes:
    return encode(ds)
